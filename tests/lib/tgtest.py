"""Scenario test harness for tgrunner (Python 3 standard library only).

Runs the real tgrunnerd against the fake Bot API (tests/lib/fakeapi.py) with
real worker processes (tests/workers/tg-test-worker), and judges what the
workers recorded:

  Daemon    start/stop/kill/restart tgrunnerd with a generated config, keep
            its log (file + memory), wait for log lines.
  Records   parse the test worker's record file (S/E/F/C lines) and check
            it: lost, duplicated, per-key order, per-key exclusion,
            attempts, latency.
  ScenarioCase
            unittest.TestCase base: temp dir, fake, daemons, cleanups, and
            the daemon log tail printed when a test fails.
  main()    unittest.main with a one-line summary and the exit status
            automake expects.

Environment: TG_BUILDDIR (build tree with tgrunnerd, tgrunner-fakeapi,
tests/workers/tg-test-worker), TG_SRCDIR, TG_TEST_SEED (random seed; printed
when chosen), TG_KEEP=1 (keep temp dirs for post-mortems).
"""

import atexit
import collections
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("TG_SRCDIR") or os.path.normpath(
    os.path.join(HERE, "..", ".."))
BUILDDIR = os.environ.get("TG_BUILDDIR") or SRCDIR

# Variables of the test worker: never inherit them from the caller's shell,
# a stray TG_MISBEHAVE would make every scenario fail mysteriously.
WORKER_VARS = ("TG_RECORD", "TG_SLEEP_MS", "TG_SLOTS", "TG_REPLY",
               "TG_MISBEHAVE", "TG_FAIL", "TG_SEED", "TG_ENVDUMP",
               "TG_DONE_DELAY_MS", "TG_KILL_AFTER_DONE")

DEFAULT_TOKEN = "123456:TEST-TOKEN"


def build_path(rel):
    return os.path.join(BUILDDIR, rel)


def daemon_path():
    return build_path("tgrunnerd")


def worker_path():
    return build_path(os.path.join("tests", "workers", "tg-test-worker"))


def missing_binaries(names=("tgrunnerd", "tgrunner-fakeapi",
                            "tests/workers/tg-test-worker")):
    """The build products a scenario needs that are not there."""
    return [n for n in names if not os.access(build_path(n), os.X_OK)]


def test_seed():
    """TG_TEST_SEED, or a fresh seed that is printed so a failure can be
    replayed."""
    s = os.environ.get("TG_TEST_SEED")
    if s:
        return int(s)
    s = int(time.time() * 1000) % 1000000007
    sys.stderr.write("tgtest: TG_TEST_SEED=%d\n" % s)
    return s


def wait_until(pred, timeout=30.0, interval=0.02, what="condition"):
    """Poll pred() until it returns a true value; return that value.
    Raises AssertionError naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s"
                                 % (timeout, what))
        time.sleep(interval)


def free_port():
    """A TCP port on loopback that was free a moment ago."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ctl(path, cmd, timeout=10.0):
    """One control-socket request; the decoded JSON answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(cmd.encode() + b"\n")
        buf = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            buf += b
    finally:
        s.close()
    return json.loads(buf)


def replies(fake, chat=None, method="sendMessage"):
    """[(t, chat_id, seq, fault)] of the replies the test worker made
    (TG_REPLY=1: "echo: seq N") that the fake received, in arrival order;
    fault is None for a call that was answered."""
    out = []
    for c in fake.calls(method=method):
        p = c["params"]
        if chat is not None and p.get("chat_id") != chat:
            continue
        m = re.match(r"echo: seq (\d+)$", p.get("text", ""))
        out.append((c["t"], p.get("chat_id"), int(m.group(1)) if m else None,
                    c.get("fault")))
    return out


# ---------------------------------------------------------------------------
# processes

_live = set()		# Daemon objects still possibly running
_live_lock = threading.Lock()
_fakes = []		# FakeApi objects started by ScenarioCase
_tmpdirs = []		# temp dirs to remove even when cleanups did not run


def _atexit_kill():
    with _live_lock:
        objs = list(_live)
    for d in objs:
        try:
            d.crash()
        except Exception:
            pass
    for f in _fakes:
        try:
            f.stop()
        except Exception:
            pass
    if not os.environ.get("TG_KEEP"):
        for t in _tmpdirs:
            shutil.rmtree(t, True)


atexit.register(_atexit_kill)


def _proc_stat(pid):
    """(state, ppid, pgrp) of pid from /proc, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    rest = data[data.rfind(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[2])


def group_members(pgid):
    """Live (non-zombie) processes of process group pgid."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _proc_stat(int(name))
            if st and st[2] == pgid and st[0] not in ("Z", "X"):
                out.append(int(name))
    return out


def _proc_comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return None


def descendants(root):
    """All live descendants of pid root (children first), from /proc."""
    kids = collections.defaultdict(list)
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _proc_stat(int(name))
        if st and st[0] != "Z":
            kids[st[1]].append(int(name))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        for c in kids.get(p, ()):
            out.append(c)
            todo.append(c)
    return out


def pid_gone(pid):
    st = _proc_stat(pid)
    return st is None or st[0] in ("Z", "X")


class Daemon:
    """One tgrunnerd under test.

    fake: a FakeApi (only .url and .token are used).  tmpdir: a directory
    this daemon owns (token, config, state_dir, log, record file).
    worker_env: variables for the workers; they are put in the daemon's
    environment, which the daemon passes on.  TG_RECORD defaults to
    tmpdir/record.txt (self.record_path).  worker_command: shell command,
    default the test worker.  conf_overrides: config options (None removes
    a default; True/False become yes/no).
    """

    def __init__(self, fake, tmpdir, workers=2, worker_env=None,
                 worker_command=None, token=None, start=True,
                 **conf_overrides):
        self.fake = fake
        self.tmpdir = tmpdir
        self.token = token if token is not None else fake.token
        self.token_path = os.path.join(tmpdir, "token")
        self.conf_path = os.path.join(tmpdir, "tgrunner.conf")
        self.state_dir = os.path.join(tmpdir, "state")
        self.log_path = os.path.join(tmpdir, "daemon.log")
        self.record_path = os.path.join(tmpdir, "record.txt")
        self.worker_env = {"TG_RECORD": self.record_path}
        self.worker_env.update(worker_env or {})
        self.conf = collections.OrderedDict([
            ("api_url", fake.url),
            ("token_file", self.token_path),
            ("state_dir", self.state_dir),
            # never the built-in default under RUNSTATEDIR: a test must not
            # take over the socket of an installed daemon
            ("control_socket", os.path.join(tmpdir, "control.sock")),
            ("journal_fsync", "batch"),
            ("workers", workers),
            ("worker_command", worker_command or shlex.quote(worker_path())),
            ("poll_timeout", "1s"),
            ("update_timeout", "10s"),
            ("kill_grace", "1s"),
            ("max_attempts", 3),
            ("shutdown_timeout", "10s"),
            ("backoff_min", "100ms"),
            ("backoff_max", "2s"),
            ("log_level", "info"),
            # the fake Bot API does not rate-limit; test_flood.py turns
            # flood control on where it is the subject
            ("flood_control", "no"),
        ])
        self._apply(conf_overrides)
        self.program = daemon_path()
        self.netns = None		# run inside this network namespace
        self.proc = None
        self.leftovers = []		# processes alive after a clean exit
        self.runs = 0
        self.lines = []			# every log line of every run
        self.run_start = 0		# index in lines where this run began
        self._cond = threading.Condition()
        self._reader = None
        self._logf = open(self.log_path, "a", encoding="utf-8")
        self._write_token()
        if start:
            self.start()

    # -- setup -------------------------------------------------------------

    def _apply(self, overrides):
        for k, v in overrides.items():
            if v is None:
                self.conf.pop(k, None)
            else:
                self.conf[k] = v

    def _write_token(self):
        fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                     0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.token + "\n")
        os.chmod(self.token_path, 0o600)

    def _write_conf(self):
        with open(self.conf_path, "w") as f:
            f.write("# written by tgtest.py\n")
            for k, v in self.conf.items():
                if v is True or v is False:
                    v = "yes" if v else "no"
                f.write("%s = %s\n" % (k, v))

    def _env(self):
        env = {k: v for k, v in os.environ.items() if k not in WORKER_VARS}
        env.update({k: str(v) for k, v in self.worker_env.items()})
        return env

    # -- life cycle ---------------------------------------------------------

    def start(self):
        """Start tgrunnerd (not waiting for ready)."""
        assert self.proc is None or self.proc.poll() is not None
        self._write_conf()
        self.runs += 1
        with self._cond:
            self.run_start = len(self.lines)
        self._log_local("---- tgtest: start #%d ----" % self.runs)
        argv = [self.program, "-c", self.conf_path]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns] + argv
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, env=self._env(), cwd=self.tmpdir,
            start_new_session=True)
        self.pid = self.proc.pid
        with _live_lock:
            _live.add(self)
        self._reader = threading.Thread(target=self._read_log,
                                        args=(self.proc.stderr,), daemon=True)
        self._reader.start()
        return self

    def _log_local(self, line):
        self._logf.write(line + "\n")
        self._logf.flush()

    def _read_log(self, stream):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
            try:
                self._log_local(line)
            except ValueError:		# closed at cleanup
                pass
        stream.close()
        with self._cond:
            self._cond.notify_all()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout=20.0):
        """Wait for this run's `ready` log line."""
        return self.wait_log(r"ready bot=", timeout)

    def wait_log(self, regex, timeout=20.0, since=None):
        """Wait for a log line of this run (or from index since) matching
        regex; return the re.Match.  Fails early if the daemon exits."""
        rx = re.compile(regex)
        start = self.run_start if since is None else since
        deadline = time.monotonic() + timeout
        died = None
        with self._cond:
            i = start
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i])
                    if m:
                        return m
                    i += 1
                now = time.monotonic()
                # After the daemon died, give the reader a moment for the
                # last lines (workers may hold the pipe open for longer).
                if died is None and self.proc.poll() is not None:
                    died = now
                dead = died is not None and (now - died > 0.5 or
                                             not self._reader.is_alive())
                left = deadline - now
                if left <= 0 or dead:
                    break
                self._cond.wait(min(left, 0.1))
        why = "daemon exited (%s)" % self.proc.returncode if dead \
            else "timeout %.1fs" % timeout
        raise AssertionError("no log line /%s/: %s\n%s"
                             % (regex, why, self.log_tail()))

    def grep(self, regex, since=0):
        """All log lines (from index since) matching regex."""
        rx = re.compile(regex)
        with self._cond:
            return [l for l in self.lines[since:] if rx.search(l)]

    SANITIZER_RX = (r"ERROR: (Address|Leak|UndefinedBehavior|Thread|Memory)"
                    r"Sanitizer|runtime error: ")

    def sanitizer_reports(self):
        """Log lines of ASan/UBSan/LSan reports (daemon or workers)."""
        return self.grep(self.SANITIZER_RX)

    def log_text(self):
        with self._cond:
            return "\n".join(self.lines) + "\n"

    def log_tail(self, n=60):
        with self._cond:
            tail = self.lines[-n:]
        return "---- daemon log tail (%s) ----\n%s\n---- end ----" % (
            self.log_path, "\n".join(tail))

    def kill(self, sig=signal.SIGKILL):
        """Send sig to the daemon process only."""
        if self.running():
            os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout=30.0):
        """Wait for the daemon to exit; return its exit status (negative:
        killed by that signal).  Raises AssertionError on timeout."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("daemon did not exit within %.1fs\n%s"
                                 % (timeout, self.log_tail()))
        if self._reader:
            self._reader.join(2)
        self._log_local("---- tgtest: exit status %s ----" % rc)
        return rc

    def stop(self, timeout=30.0):
        """SIGTERM, wait; return the exit status.  Processes the daemon
        left behind (its workers must be gone when it exits) are killed
        and listed in self.leftovers."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        rc = self.wait_exit(timeout)
        self.check_leftovers()
        with _live_lock:
            _live.discard(self)
        return rc

    def check_leftovers(self, grace=3.0):
        """After the daemon exited: wait up to grace seconds for its
        process group to empty; kill and record what is left."""
        deadline = time.monotonic() + grace
        while True:
            left = group_members(self.proc.pid)
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        for p in left:
            self.leftovers.append("%d (%s)" % (p, _proc_comm(p)))
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        if left:
            self._log_local("---- tgtest: left behind: %s ----" % left)
        return left

    def worker_pids(self, comm=None):
        """Live descendants of the daemon, optionally only those whose
        /proc comm contains `comm` (libtool may run the test worker as
        .libs/lt-tg-test-worker, and comm is cut at 15 bytes: use
        "tg-test-wor")."""
        if not self.running():
            return []
        pids = descendants(self.proc.pid)
        if comm:
            pids = [p for p in pids if comm in (_proc_comm(p) or "")]
        return pids

    def crash(self, timeout=10.0):
        """SIGKILL the daemon and every process it started, and wait until
        all of them are gone.  Returns time.time_ns() taken just before the
        kill (the kill point)."""
        if self.proc is None:
            return time.time_ns()
        pids = descendants(self.proc.pid) if self.proc.poll() is None else []
        t = time.time_ns()
        for fn, arg in [(os.killpg, self.proc.pid)] + \
                [(os.kill, p) for p in pids]:
            try:
                fn(arg, signal.SIGKILL)
            except OSError:
                pass
        # Late children forked between the scan and the kill die with the
        # process group (start_new_session); stragglers get a second pass.
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + timeout
        while any(not pid_gone(p) for p in pids) and \
                time.monotonic() < deadline:
            time.sleep(0.01)
        if self._reader:
            self._reader.join(2)
        with _live_lock:
            _live.discard(self)
        self._log_local("---- tgtest: crashed (SIGKILL) ----")
        return t

    def restart(self, worker_env=None, **conf_overrides):
        """Stop if running (SIGTERM), then start again with the same config
        and state_dir (plus the changes given); waits for ready."""
        if self.running():
            self.stop()
        if worker_env is not None:
            self.worker_env = {"TG_RECORD": self.record_path}
            self.worker_env.update(worker_env)
        self._apply(conf_overrides)
        self.start()
        self.wait_ready()
        return self

    def close(self):
        """Cleanup: kill everything, close the log file.  Idempotent."""
        try:
            self.crash()
        finally:
            if not self._logf.closed:
                self._logf.close()

    def dead_letters(self):
        """Parsed state_dir/dead-letters.jsonl (list of dicts)."""
        import json
        path = os.path.join(self.state_dir, "dead-letters.jsonl")
        try:
            with open(path) as f:
                return [json.loads(l) for l in f if l.strip()]
        except FileNotFoundError:
            return []

    def records(self):
        return Records(self.worker_env.get("TG_RECORD", self.record_path))


# ---------------------------------------------------------------------------
# records

Rec = collections.namedtuple("Rec", "kind id attempt pid keys chat seq t line")


def parse_record_line(line, lineno=0):
    """One record line -> Rec, or None when malformed."""
    f = line.split()
    if len(f) != 8 or f[0] not in ("S", "E", "F", "C"):
        return None
    try:
        keys = () if f[4] == "-" else tuple(f[4].split(","))
        chat = None if f[5] == "-" else int(f[5])
        seq = None if f[6] == "-" else int(f[6])
        return Rec(f[0], int(f[1]), int(f[2]), int(f[3]), keys, chat, seq,
                   int(f[7]), lineno)
    except ValueError:
        return None


def key_recorded(rec):
    """The keys the daemon put in the frame (trusts the daemon)."""
    return rec.keys


def key_chat(rec):
    """The chat id the worker saw (independent of the daemon)."""
    return () if rec.chat is None else ("chat:%d" % rec.chat,)


def _pct(sorted_vals, p):
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, int(round(p / 100.0 * (len(sorted_vals) - 1))))
    return sorted_vals[i]


class Report:
    """What Records.check() found.  ok is true when nothing is wrong."""

    LIMIT = 10

    def __init__(self):
        self.injected = 0
        self.starts = 0
        self.ends = 0
        self.fails = 0
        self.cancels = 0
        self.lost = []			# injected ids without an E
        self.duplicated = {}		# id -> number of E lines (> 1)
        self.unexplained_dups = []	# duplicates no kill point explains
        self.unexpected = []		# E ids that were never injected
        self.order = []			# per-key order violations
        self.overlap = []		# per-key exclusion violations
        self.attempts = []		# attempt numbering violations
        self.unmatched = []		# ends without a start
        self.bad_lines = []		# malformed record lines
        self.kills = 0
        self.dups_open = 0		# duplicates open at a kill point
        self.dups_recent = 0		# ... or ended just before one
        self.dups_killed_worker = 0	# worker killed right after its E

    @property
    def ok(self):
        return not (self.lost or self.unexplained_dups or self.unexpected or
                    self.order or self.overlap or self.attempts or
                    self.unmatched or self.bad_lines)

    def _few(self, xs):
        xs = list(xs)
        s = ", ".join(str(x) for x in xs[:self.LIMIT])
        return s + (" ... (%d more)" % (len(xs) - self.LIMIT)
                    if len(xs) > self.LIMIT else "")

    def summary(self):
        out = ["records: %d injected, %d S, %d E, %d F, %d C, %d kill points"
               % (self.injected, self.starts, self.ends, self.fails,
                  self.cancels, self.kills),
               "lost: %d" % len(self.lost),
               "duplicated: %d (open at a kill %d, ended just before one %d,"
               " worker killed after its E %d, unexplained %d)"
               % (len(self.duplicated), self.dups_open, self.dups_recent,
                  self.dups_killed_worker, len(self.unexplained_dups)),
               "order violations: %d" % len(self.order),
               "overlap violations: %d" % len(self.overlap),
               "attempt violations: %d" % len(self.attempts),
               "unmatched ends: %d, unexpected ids: %d, bad lines: %d"
               % (len(self.unmatched), len(self.unexpected),
                  len(self.bad_lines))]
        for name in ("lost", "unexplained_dups", "unexpected", "order",
                     "overlap", "attempts", "unmatched", "bad_lines"):
            v = getattr(self, name)
            if v:
                out.append("  %s: %s" % (name, self._few(v)))
        if self.duplicated and not self.unexplained_dups:
            out.append("  duplicated (explained by kills): %s"
                       % self._few(sorted(self.duplicated)))
        return "\n".join(out)

    __str__ = summary


class _Open:
    __slots__ = ("id", "attempt", "pid", "t", "keys", "line")

    def __init__(self, r, keys):
        self.id, self.attempt, self.pid, self.t = r.id, r.attempt, r.pid, r.t
        self.keys, self.line = keys, r.line


class _Checker:
    """One pass over the records in file order (the real order of events).
    State is per epoch: a kill point ends an epoch (everything the killed
    processes had open is closed, and per-key order restarts because the
    daemon replays its journal)."""

    def __init__(self, rep, key_of, deaths, hold_ns, pid_final):
        self.rep, self.key_of = rep, key_of
        self.deaths = deaths or {}
        self.hold_ns = hold_ns
        self.pid_final = pid_final	# pid -> line of its last record
        self.death_dups = set()		# re-run because killed after its E
        self.reset()

    def reset(self):
        self.open = {}			# id -> _Open
        self.holder = {}		# key -> id
        self.last_id = {}		# key -> highest id started
        self.status = {}		# id -> kind of its last line this epoch
        self.last_attempt = {}		# id -> attempt of its last S
        self.abandoned = set()		# ids whose open start we gave up on
        self.last_end = {}		# id -> its latest E record

    def _close(self, o):
        for k in o.keys:
            if self.holder.get(k) == o.id:
                del self.holder[k]
        del self.open[o.id]

    def _expire(self, t):
        """Close starts whose worker is known dead, or that are older than
        the hold timeout (the daemon must have given up on them)."""
        for o in list(self.open.values()):
            dt = self.deaths.get(o.pid)
            if (dt is not None and dt <= t) or \
                    (self.hold_ns is not None and t - o.t >= self.hold_ns):
                self._close(o)
                self.abandoned.add(o.id)

    def start(self, r):
        rep = self.rep
        rep.starts += 1
        self._expire(r.t)
        prev = self.open.get(r.id)
        if prev is not None:		# a new attempt closes the dead one
            self._close(prev)
        if self.status.get(r.id) == "E":
            if self._killed_after_end(self.last_end[r.id], r):
                self.death_dups.add(r.id)
            else:
                rep.order.append("line %d: id %d started again after it "
                                 "ended" % (r.line, r.id))
        pa = self.last_attempt.get(r.id)
        if pa is not None and r.attempt <= pa:
            rep.attempts.append("line %d: id %d attempt %d after attempt %d"
                                % (r.line, r.id, r.attempt, pa))
        keys = tuple(self.key_of(r))
        for k in keys:
            last = self.last_id.get(k)
            if last is not None and r.id < last:
                rep.order.append("line %d: key %s: id %d after id %d"
                                 % (r.line, k, r.id, last))
            if last is None or r.id > last:
                self.last_id[k] = r.id
            h = self.holder.get(k)
            if h is not None and h != r.id:
                rep.overlap.append("line %d: key %s: id %d started while "
                                   "id %d (line %d) in progress"
                                   % (r.line, k, r.id, h, self.open[h].line))
            self.holder[k] = r.id
        self.open[r.id] = _Open(r, keys)
        self.status[r.id] = "S"
        self.last_attempt[r.id] = r.attempt

    def _killed_after_end(self, e, r):
        """r may run e's update again: the test killed e's (one-slot)
        worker and e is the last line it ever wrote, so it may have died
        before its done left, however long after e the kill came (a worker
        can be descheduled between the two for as long as the machine
        likes).  Had it written anything after e, the daemon had its done:
        a one-slot worker gets no more work before.  And r can only start
        after the kill."""
        dt = self.deaths.get(e.pid)
        return dt is not None and self.pid_final.get(e.pid) == e.line \
            and r.t >= dt

    def end(self, r):
        rep = self.rep
        if r.kind == "E":
            self.last_end[r.id] = r
        if r.kind == "E":
            rep.ends += 1
        elif r.kind == "F":
            rep.fails += 1
        else:
            rep.cancels += 1
        o = self.open.get(r.id)
        if o is not None:
            self._close(o)
        elif r.id not in self.abandoned:
            rep.unmatched.append("line %d: %s %d without a start"
                                 % (r.line, r.kind, r.id))
        self.status[r.id] = r.kind


class Records:
    """The test worker's record file, parsed incrementally (only complete
    lines are consumed, so it can be read while workers append)."""

    def __init__(self, path):
        self.path = path
        self.recs = []
        self.bad = []			# (lineno, text)
        self.nlines = 0
        self._off = 0
        self._partial = b""
        self.end_count = collections.Counter()
        self.refresh()

    def refresh(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self._off)
                data = f.read()
        except FileNotFoundError:
            return self
        self._off += len(data)
        data = self._partial + data
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        for raw in data[:cut].splitlines():
            self.nlines += 1
            line = raw.decode("utf-8", "replace")
            r = parse_record_line(line, self.nlines)
            if r is None:
                self.bad.append((self.nlines, line))
                continue
            self.recs.append(r)
            if r.kind == "E":
                self.end_count[r.id] += 1
        return self

    def line_count(self):
        return self.refresh().nlines

    def ended(self):
        return set(self.refresh().end_count)

    def count(self, kind):
        return sum(1 for r in self.refresh().recs if r.kind == kind)

    def missing(self, ids):
        self.refresh()
        return [i for i in ids if i not in self.end_count]

    def wait_ended(self, ids, timeout=60.0, daemon=None, what=None):
        """Wait until every id in ids has an E line.  Fails early (with the
        log tail) if daemon is given and exits."""
        ids = list(ids)
        deadline = time.monotonic() + timeout
        while True:
            miss = self.missing(ids)
            if not miss:
                return
            dead = daemon is not None and not daemon.running()
            if dead or time.monotonic() >= deadline:
                msg = "%s: %d of %d ids never ended (e.g. %s); %s" % (
                    what or "delivery", len(miss), len(ids), miss[:10],
                    "daemon exited with %s" % daemon.proc.returncode
                    if dead else "timeout %.0fs" % timeout)
                if daemon is not None:
                    msg += "\n" + daemon.log_tail()
                raise AssertionError(msg)
            ids = miss
            time.sleep(0.05)

    def check(self, injected, key_of=key_recorded, kills=(), deaths=None,
              hold_timeout=None, dup_grace=1.0, check_replay_attempts=False):
        """Judge the records.

        injected: ids that must each end exactly once (E line).
        key_of(rec) -> iterable of keys for order/exclusion checks.
        kills: [(line_count, t_ns), ...] kill points of the daemon: the
          record file's line count once everything was dead, and the time
          just before the kill.  They end epochs, and a duplicate is
          allowed only for an id that was open (S without end) at a kill
          point, or ended less than dup_grace seconds before it (its done
          may not have reached the journal yet).
        deaths: {pid: t_ns} one-slot workers killed by the test, with the
          time just before the kill (the first kill, if one was killed
          twice): their open starts close at that time, and an id whose E
          is the last line its killed worker ever wrote may run again
          after the kill, whatever the delay: the done may not have been
          sent.  Anything else that ends twice is the daemon's fault.
        hold_timeout: seconds after which an unfinished start no longer
          holds its keys (the daemon's update_timeout: it gave up).
        check_replay_attempts: an id started again in a later epoch must
          carry attempt > 1 there.
        """
        self.refresh()
        rep = Report()
        injected = list(injected)
        inj = set(injected)
        rep.injected = len(inj)
        rep.kills = len(kills)
        rep.bad_lines = ["line %d: %r" % b for b in self.bad]
        hold_ns = None if hold_timeout is None else int(hold_timeout * 1e9)
        pid_final = {r.pid: r.line for r in self.recs}
        ck = _Checker(rep, key_of, deaths, hold_ns, pid_final)
        bounds = sorted(kills)
        allowed = set()
        allowed_open = set()
        bi = 0
        ended_at = {}			# id -> t of its last E this epoch
        seen_epoch = {}			# id -> last epoch it started in
        for r in self.recs:
            while bi < len(bounds) and r.line > bounds[bi][0]:
                self._kill_point(ck, bounds[bi], ended_at, allowed,
                                 allowed_open, dup_grace)
                ended_at = {}
                bi += 1
            if r.kind == "S":
                if check_replay_attempts and r.id in seen_epoch and \
                        seen_epoch[r.id] < bi and r.attempt <= 1:
                    rep.attempts.append(
                        "line %d: id %d replayed after a kill with attempt %d"
                        % (r.line, r.id, r.attempt))
                seen_epoch[r.id] = bi
                ck.start(r)
            else:
                ck.end(r)
                if r.kind == "E":
                    ended_at[r.id] = r.t
        rep.lost = sorted(i for i in inj if i not in self.end_count)
        rep.duplicated = {i: n for i, n in self.end_count.items() if n > 1}
        rep.dups_killed_worker = len(ck.death_dups & set(rep.duplicated))
        rep.unexplained_dups = sorted(i for i in rep.duplicated
                                      if i not in allowed and
                                      i not in ck.death_dups)
        rep.dups_open = sum(1 for i in rep.duplicated if i in allowed_open)
        rep.dups_recent = sum(1 for i in rep.duplicated
                              if i in allowed and i not in allowed_open)
        rep.unexpected = sorted(i for i in self.end_count if i not in inj)
        return rep

    @staticmethod
    def _kill_point(ck, bound, ended_at, allowed, allowed_open, grace):
        _, t_kill = bound
        allowed_open.update(ck.open)
        allowed_open.update(ck.abandoned)
        allowed.update(allowed_open)
        g = int(grace * 1e9)
        allowed.update(i for i, t in ended_at.items() if t >= t_kill - g)
        ck.reset()

    # -- measurements -------------------------------------------------------

    def first_end(self):
        """id -> t_ns of its first E."""
        out = {}
        for r in self.refresh().recs:
            if r.kind == "E" and r.id not in out:
                out[r.id] = r.t
        return out

    def latency(self, released):
        """Stats (ms) of first E minus release time; released is the fake's
        [[update_id, unix_time_float], ...]."""
        fe = self.first_end()
        vals = sorted((fe[i] / 1e9 - t) * 1000.0 for i, t in released
                      if i in fe)
        if not vals:
            return {"n": 0}
        return {"n": len(vals), "p50": _pct(vals, 50), "p95": _pct(vals, 95),
                "p99": _pct(vals, 99), "max": vals[-1]}

    def by_chat(self):
        """chat -> dict(first_s, last_e, work_ns, n) over S/E lines."""
        out = {}
        start = {}
        for r in self.refresh().recs:
            if r.chat is None:
                continue
            c = out.setdefault(r.chat, {"first_s": None, "last_e": None,
                                        "work_ns": 0, "n": 0})
            if r.kind == "S":
                if c["first_s"] is None:
                    c["first_s"] = r.t
                start[(r.id, r.attempt)] = r.t
            elif r.kind == "E":
                c["last_e"] = r.t if c["last_e"] is None else \
                    max(c["last_e"], r.t)
                c["n"] += 1
                s = start.get((r.id, r.attempt))
                if s is not None:
                    c["work_ns"] += r.t - s
        return out


# ---------------------------------------------------------------------------
# unittest glue

class ScenarioCase(unittest.TestCase):
    """Base of the scenario tests: a temp dir per test, helpers that start
    the fake and daemons with cleanups, the daemon log tail on failure."""

    needs = ("tgrunnerd", "tgrunner-fakeapi", "tests/workers/tg-test-worker")

    def setUp(self):
        miss = missing_binaries(self.needs)
        if miss:
            self.fail("missing build products in TG_BUILDDIR=%s: %s"
                      % (BUILDDIR, ", ".join(miss)))
        self.tmp = tempfile.mkdtemp(prefix="tgscn-")
        _tmpdirs.append(self.tmp)
        if os.environ.get("TG_KEEP"):
            sys.stderr.write("tgtest: keeping %s\n" % self.tmp)
        else:
            self.addCleanup(shutil.rmtree, self.tmp, True)
        self._daemons = []
        self.rng = random.Random(test_seed())

    def run(self, result=None):
        if result is None:
            return super().run(result)
        before = len(getattr(result, "failures", ())) + \
            len(getattr(result, "errors", ()))
        r = super().run(result)
        after = len(getattr(result, "failures", ())) + \
            len(getattr(result, "errors", ()))
        if after > before:
            for d in getattr(self, "_daemons", ()):
                sys.stderr.write(d.log_tail() + "\n")
        return r

    def subdir(self, name):
        p = os.path.join(self.tmp, name)
        os.makedirs(p, exist_ok=True)
        return p

    def start_fake(self, **kw):
        from fakeapi import FakeApi
        kw.setdefault("builddir", BUILDDIR)
        fake = self.enterContext(FakeApi(**kw))
        _fakes.append(fake)
        return fake

    def start_daemon(self, fake, name="d", wait=True, **kw):
        """A Daemon in tmp/<name>, killed at cleanup; waits for ready."""
        d = Daemon(fake, self.subdir(name), start=False, **kw)
        self._daemons.append(d)
        self.addCleanup(self._no_sanitizer_reports, d)	# after close
        self.addCleanup(d.close)
        d.start()
        if wait:
            d.wait_ready()
        return d

    def _no_sanitizer_reports(self, d):
        bad = d.sanitizer_reports()
        if bad:
            self.fail("sanitizer reports in %s:\n%s\n%s"
                      % (d.log_path, "\n".join(bad[:10]), d.log_tail()))

    def assertReport(self, rep, daemon=None):
        if not rep.ok:
            msg = rep.summary()
            if daemon is not None:
                msg += "\n" + daemon.log_tail()
            self.fail(msg)

    def generate(self, fake, count, chats, **kw):
        """fake.generate with a seed from the test's rng; returns the
        list of ids."""
        kw.setdefault("seed", self.rng.randrange(1 << 30))
        first, last = fake.generate(count, chats, **kw)
        self.assertEqual(last - first + 1, count)
        return list(range(first, last + 1))

    def inject(self, fake, updates):
        """fake.inject; returns the list of ids (in input order)."""
        first, last = fake.inject(updates)
        self.assertEqual(last - first + 1, len(updates))
        return list(range(first, last + 1))

    def finish(self, fake, d, ids, timeout=90.0):
        """Wait for every id to end, for the offset to be confirmed, then
        stop the daemon (must exit 0) so the record file is final.
        Returns the Records."""
        rec = d.records()
        rec.wait_ended(ids, timeout, daemon=d)
        self.wait_confirmed(fake, max(ids))
        rc = d.stop()
        self.assertEqual(rc, 0, "daemon exit status %s\n%s"
                         % (rc, d.log_tail()))
        self.assertNoLeftovers(d)
        return rec.refresh()

    def assertNoLeftovers(self, d):
        self.assertEqual(d.leftovers, [], "processes still running after "
                         "the daemon exited\n" + d.log_tail())

    def wait_confirmed(self, fake, last_id, timeout=20.0):
        """The daemon confirms everything it got: offset == last + 1."""
        try:
            wait_until(lambda: fake.stats().get("confirmed_offset", 0)
                       >= last_id + 1, timeout,
                       what="confirmed_offset >= %d" % (last_id + 1))
        except AssertionError as e:
            raise AssertionError("%s; fake stats %r" % (e, fake.stats()))
        self.assertEqual(fake.stats()["confirmed_offset"], last_id + 1)


def _on_sigterm(sig, frame):
    # A test-suite timeout: unwind so atexit kills what we started.
    raise KeyboardInterrupt("SIGTERM")


def main():
    """unittest.main with a one-line summary; exit 0 only on success."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    prog = unittest.main(module="__main__", verbosity=2, exit=False)
    res = prog.result
    skipped = len(getattr(res, "skipped", ()))
    sys.stderr.write("SUMMARY %s: %d run, %d failures, %d errors, %d skipped"
                     " -> %s\n" % (os.path.basename(sys.argv[0]), res.testsRun,
                                   len(res.failures), len(res.errors), skipped,
                                   "PASS" if res.wasSuccessful() else "FAIL"))
    if res.wasSuccessful() and res.testsRun and skipped == res.testsRun:
        sys.exit(77)
    sys.exit(0 if res.wasSuccessful() else 1)
