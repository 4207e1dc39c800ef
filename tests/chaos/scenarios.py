"""The chaos scenarios.  Each runs tgrunnerd against the fake Bot API under
sustained traffic (updates released at a steady rate while the faults
happen) with random handler times, and judges the test worker's records.

Every scenario takes a Ctx (chaoslib.py); ctx.quick scales it down.
"""

import os
import re
import shlex
import signal
import subprocess
import time

from chaoslib import Skip, WORKER_COMM, have_root_mount, wait_until
import tgtest


def P(ctx, full, quick):
    return quick if ctx.quick else full


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


# ---------------------------------------------------------------------------
# workers

def worker_sigkill(ctx):
    """SIGKILL a random worker every 200 ms while updates flow."""
    count = P(ctx, 6000, 1200)
    rate = P(ctx, 300, 250)
    fake = ctx.start_fake()
    d = ctx.start_daemon(fake, workers=4, max_attempts=10,
                         worker_env={"TG_SLEEP_MS": "0-20"})
    ids = ctx.generate(fake, count, 200, rate=rate)
    rec = d.records()
    deaths = {}
    deadline = time.monotonic() + count / rate + 120
    while rec.missing(ids) and time.monotonic() < deadline and d.running():
        time.sleep(0.2)
        # not one killed already (maybe not reaped yet): its first kill
        # is its death
        pids = [p for p in d.worker_pids(WORKER_COMM) if p not in deaths]
        if not pids:
            continue
        p = ctx.rng.choice(pids)
        deaths[p] = time.time_ns()
        if not _kill(p, signal.SIGKILL):
            del deaths[p]
    ctx.note("%d workers SIGKILLed", len(deaths))
    if len(deaths) < 5:
        ctx.problem("only %d kills: the run was too short to mean anything"
                    % len(deaths))
    rec = ctx.finish(fake, d, ids)
    ctx.judge(rec, ids, deaths=deaths)


def worker_sigstop(ctx):
    """SIGSTOP a random worker now and then.  Half of them get SIGCONT
    before update_timeout (a stall: nothing may break); the others stay
    stopped, and the daemon must take the update_timeout path: cancel,
    SIGTERM, SIGKILL, re-dispatch."""
    count = P(ctx, 3000, 700)
    rate = P(ctx, 120, 100)
    timeout_s, grace_s = 2.0, 0.5
    fake = ctx.start_fake()
    d = ctx.start_daemon(fake, workers=4, max_attempts=10,
                         update_timeout="%dms" % (timeout_s * 1000),
                         kill_grace="%dms" % (grace_s * 1000),
                         worker_env={"TG_SLEEP_MS": "0-20"})
    ids = ctx.generate(fake, count, 200, rate=rate)
    rec = d.records()
    stopped = {}		# pid -> time of SIGSTOP (left stopped)
    stalls = 0
    t_end = time.monotonic() + count / rate
    deadline = t_end + 120
    while rec.missing(ids) and time.monotonic() < deadline and d.running():
        time.sleep(ctx.rng.uniform(0.5, 1.5))
        if time.monotonic() > t_end:
            continue		# the last updates: let them go through
        pids = [p for p in d.worker_pids(WORKER_COMM) if p not in stopped]
        if len(pids) < 2:
            continue
        p = ctx.rng.choice(pids)
        t = time.time_ns()
        if not _kill(p, signal.SIGSTOP):
            continue
        # the first one always stays stopped, so the hung path is tested
        if stopped and ctx.rng.random() < 0.5:
            time.sleep(ctx.rng.uniform(0.1, timeout_s / 2))
            _kill(p, signal.SIGCONT)
            stalls += 1
        else:
            stopped[p] = t
    # A worker left stopped while idle gets no update, so no timeout:
    # wake those up (they never stopped being alive).
    killed = {p: t for p, t in stopped.items() if tgtest.pid_gone(p)}
    for p in stopped:
        if p not in killed:
            _kill(p, signal.SIGCONT)
    ctx.note("%d stalls (SIGSTOP, SIGCONT), %d workers left stopped, %d of "
             "them killed by the daemon", stalls, len(stopped), len(killed))
    timeouts = d.grep(r"timed out")
    ctx.note("%d 'timed out' lines in the log", len(timeouts))
    if killed and not timeouts:
        ctx.problem("hung workers were killed but the log never said "
                    "'timed out'")
    if not stopped:
        ctx.problem("no worker was left stopped: nothing tested")
    rec = ctx.finish(fake, d, ids)
    # a stopped process does nothing after the SIGSTOP: it died then
    ctx.judge(rec, ids, deaths=killed)


MISBEHAVE_SCRIPT = """#!/bin/sh
# one misbehaviour per worker process, picked at random
n=$(od -An -N1 -tu1 /dev/urandom)
case $((n %% 5)) in
0) m=garbage ;; 1) m=exit ;; 2) m=midframe ;; 3) m=oversize ;; *) m=baddone ;;
esac
TG_MISBEHAVE=$m:%s exec %s
"""


def worker_misbehave(ctx):
    """Workers that write garbage, exit, stop mid-frame, send an oversize
    frame or answer an id they do not hold (tg-test-worker's TG_MISBEHAVE
    modes, one picked at random per process)."""
    count = P(ctx, 4000, 800)
    rate = P(ctx, 250, 200)
    fake = ctx.start_fake()
    script = os.path.join(ctx.tmp, "misbehave.sh")
    with open(script, "w") as f:
        f.write(MISBEHAVE_SCRIPT % ("0.02", shlex.quote(tgtest.worker_path())))
    os.chmod(script, 0o755)
    d = ctx.start_daemon(fake, workers=4, max_attempts=10,
                         worker_command=shlex.quote(script),
                         worker_env={"TG_SLEEP_MS": "0-10"})
    ids = ctx.generate(fake, count, 200, rate=rate)
    rec = ctx.finish(fake, d, ids, timeout=count / rate + 120)
    rep = ctx.judge(rec, ids)
    perr = len(d.grep(r"protocol error"))
    died = len(d.grep(r"(?i)exit|died|status 3"))
    # baddone answers an id the worker does not hold: tolerated and
    # logged since #17, so it leaves no start without an end
    stray = len(d.grep(r"which is not held by this worker"))
    ctx.note("%d starts without an end (misbehaved), %d protocol errors "
             "logged, %d exit lines, %d stray answers logged",
             rep.starts - rep.ends - rep.fails - rep.cancels, perr, died,
             stray)
    if rep.duplicated:
        ctx.problem("%d duplicates without any kill" % len(rep.duplicated))
    if rep.starts <= rep.ends and stray == 0:
        ctx.problem("no worker misbehaved")


# ---------------------------------------------------------------------------
# the daemon

def daemon_sigkill(ctx):
    """SIGKILL the daemon (and its workers) at random moments and restart
    it on the same state_dir, 10 times; some kills land during start-up
    and journal replay.  Every update is answered with a reply that flood
    control paces well below the update rate (a quarter of it; 20/s in the
    quick form, which a daemon under ASan on a loaded machine still outruns:
    pacing at a quarter of its nominal rate was not always slower than the
    updates there, and no reply was owed at any kill), so replies are owed
    at the kills: none may be lost."""
    kills_n = P(ctx, 10, 3)
    count = P(ctx, 8000, 400)
    rate = P(ctx, 400, 200)
    reply_rate = P(ctx, rate // 4, 20)
    fake = ctx.start_fake()
    d = ctx.start_daemon(fake, workers=4, flood_control=True,
                         flood_global_rate="%d/s" % reply_rate,
                         flood_chat_rate="100/s",
                         worker_env={"TG_SLEEP_MS": "0-10", "TG_REPLY": "1"})
    ids = ctx.generate(fake, count, 200, rate=rate)
    rec = d.records()
    span = count / rate
    kills = []
    owed_at_kill = []
    early = 0
    for i in range(kills_n):
        if i > 0 and ctx.rng.random() < 0.25:
            # during start-up: before ready, or while replaying
            time.sleep(ctx.rng.uniform(0, 0.3))
            early += 1
        else:
            if i > 0:
                d.wait_ready(60)
            time.sleep(ctx.rng.uniform(0.2, max(0.3, 1.6 * span / kills_n)))
            if i == 0:
                # the first kill, at least, comes with replies owed
                try:
                    wait_until(lambda: ctx.expected_replies(rec, ids) -
                               set(ctx.received_replies(fake)), 30,
                               what="replies owed")
                except AssertionError:
                    pass
        if not d.running():
            ctx.problem("daemon exited by itself (status %s)"
                        % d.proc.returncode)
            break
        t = d.crash()
        kills.append((rec.line_count(), t))
        owed_at_kill.append(len(ctx.expected_replies(rec, ids) -
                                set(ctx.received_replies(fake))))
        d.start()
    d.wait_ready(60)
    ctx.note("%d SIGKILLs of the daemon (%d during start-up)", len(kills),
             early)
    ctx.note("replies owed at the kills: %s",
             ", ".join(str(n) for n in owed_at_kill))
    if not any(owed_at_kill):
        ctx.problem("no reply was owed at any kill: the outbox was not "
                    "tested")
    try:
        rec.wait_ended(ids, span + 120, daemon=d)
    except AssertionError:
        pass			# finish() says what is missing
    ctx.judge_replies(fake, rec, ids, timeout=count / reply_rate + 60)
    rec = ctx.finish(fake, d, ids, timeout=span + 120)
    rep = ctx.judge(rec, ids, kills=kills, dup_grace=1.0,
                    check_replay_attempts=True)
    ctx.note("duplicates: %d open at a kill, %d ended just before one",
             rep.dups_open, rep.dups_recent)


# ---------------------------------------------------------------------------
# the Bot API

API_FAULTS = [
    # (kind, method, count full, count quick, extra): each burst waits
    # until the fake served it
    ("5xx", "getUpdates", 10, 4, {"status": 502}),
    ("429", "getUpdates", 8, 2, {"retry_after": 1}),
    ("409", "getUpdates", 5, 2, {}),
    ("slow", "getUpdates", 2, 1, {"delay_ms": 3000}),
    ("truncated", "getUpdates", 4, 2, {}),
    ("malformed", "getUpdates", 3, 2, {}),
    ("reset", "getUpdates", 8, 3, {}),
    ("5xx", "getUpdates", 6, 2, {"status": 503}),
    ("429", "sendMessage", 15, 5, {"retry_after": 1, "every": 7}),
]


def api_faults(ctx):
    """Every fault the fake can make, in a row, while updates flow: 502
    and 503 bursts, a 429 storm, 409, slow answers, truncated and
    malformed JSON, connection resets, a 429 storm on the replies; then the
    API down for 30 s (every request reset) and back."""
    down = P(ctx, 30.0, 4.0)
    count = P(ctx, 6000, 1000)
    span = P(ctx, 50.0, 10.0)
    fake = ctx.start_fake()
    d = ctx.start_daemon(fake, workers=4, backoff_min="100ms",
                         backoff_max="2s",
                         worker_env={"TG_SLEEP_MS": "0-10", "TG_REPLY": "1"})
    ids = ctx.generate(fake, count, 200, rate=count / span)
    served = 0
    phases = []
    for kind, method, n_full, n_quick, extra in API_FAULTS:
        n = P(ctx, n_full, n_quick)
        t0 = time.monotonic()
        before = fake.stats()["calls"].get(method, 0) \
            if method != "getUpdates" else fake.stats()["polls"]

        def used(method=method, before=before, n=n):
            s = fake.stats()
            now = s["polls"] if method == "getUpdates" else \
                s["calls"].get(method, 0)
            return now - before >= n
        fake.fault(kind, method=method, count=n, **extra)
        try:
            wait_until(used, 60, what="%s x%d on %s served" % (kind, n,
                                                               method))
            served += 1
            phases.append("%s%s x%d %.1fs" % (
                kind, "" if method == "getUpdates" else "@" + method, n,
                time.monotonic() - t0))
        except AssertionError as e:
            ctx.problem(str(e))
            fake.clear_faults()
        if not d.running():
            break
    ctx.note("%d of %d fault bursts served: %s", served, len(API_FAULTS),
             ", ".join(phases))
    # the API goes away for `down` seconds: every request is reset
    p0 = fake.stats()["polls"]
    c0 = fake.stats()["confirmed_offset"]
    fake.fault("reset", method="*", count=-1)
    time.sleep(down)		# the outage lasts this long
    p1 = fake.stats()["polls"]
    fake.clear_faults()
    ctx.note("API down %.0fs: %d polls meanwhile (back-off), confirmed "
             "offset %d before", down, p1 - p0, c0)
    if p1 - p0 < 2:
        ctx.problem("the daemon stopped polling while the API was down")
    if p1 - p0 > down / 0.1 + 5:
        ctx.problem("polling spins while the API is down: %d polls"
                    % (p1 - p0))
    rec = ctx.finish(fake, d, ids, timeout=span + 120)
    rep = ctx.judge(rec, ids)
    if rep.duplicated:
        ctx.problem("%d duplicates without any kill (exactly-once while the"
                    " daemon runs)" % len(rep.duplicated))
    replies = {(c["params"].get("chat_id"), c["params"].get("text"))
               for c in fake.calls(method="sendMessage")}
    want = {(r.chat, "echo: seq %d" % r.seq): r.id for r in rec.recs
            if r.kind == "E" and r.seq is not None}
    # a reply that met a connection reset is not repeated (sendMessage is
    # not idempotent): it must be logged, never silently dropped
    failed = {int(m) for m in re.findall(
        r"update=(\d+) [^:]*: attached call failed", d.log_text())}
    missing = [k for k in want if k not in replies]
    silent = [k for k in missing if want[k] not in failed]
    ctx.note("replies: %d of %d sent, %d failed and logged as such",
             len(want) - len(missing), len(want), len(missing) - len(silent))
    if silent:
        ctx.problem("%d replies neither sent nor reported failed (e.g. %s)"
                    % (len(silent), sorted(silent)[:3]))
    if not d.grep(r"(?i)getUpdates"):
        ctx.problem("the log never mentions the getUpdates failures")


# ---------------------------------------------------------------------------
# the disk

def _mount_tmpfs(ctx, path, size):
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700"
                        % size, "tmpfs", path], stderr=subprocess.PIPE,
                       text=True)
    if r.returncode != 0:
        raise Skip("cannot mount a tmpfs: %s" % r.stderr.strip())
    ctx.defer(subprocess.run, ["umount", "-l", path])


def _remount(path, mode):
    subprocess.run(["mount", "-o", "remount,%s" % mode, path], check=True)


def _fill(path):
    """Fill the file system of path; returns the filler's name."""
    name = os.path.join(path, "filler")
    chunk = b"\0" * 4096
    with open(name, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        try:
            while True:		# the last partial block
                f.write(b"\0" * 64)
        except OSError:
            pass
    return name


def disk_full(ctx):
    """The state directory fills up (a small tmpfs): journal_append fails,
    the batch is not confirmed, the poller backs off and retries; when
    space returns everything is delivered.  Then the daemon is started on a
    read-only state directory: it must say so and confirm nothing; once it
    is writable again everything is delivered."""
    if not have_root_mount():
        raise Skip("mounting a tmpfs is not permitted")
    count = P(ctx, 4000, 1500)
    rate = P(ctx, 200, 200)
    full_s = P(ctx, 5.0, 2.0)
    fake = ctx.start_fake()
    state = os.path.join(ctx.tmp, "statefs")
    _mount_tmpfs(ctx, state, "2m")
    d = ctx.start_daemon(fake, workers=4, state_dir=state,
                         worker_env={"TG_SLEEP_MS": "0-10"})
    ids = ctx.generate(fake, count, 200, rate=rate)
    rec = d.records()
    # fill it while updates are still being released (a third of the way)
    wait_until(lambda: fake.stats()["confirmed_offset"] > ids[count // 3]
               or not d.running(), 60, what="a third confirmed")
    mark = len(d.lines)
    filler = _fill(state)
    try:
        d.wait_log(r"could not store the batch", 30, since=mark)
    except AssertionError:
        ctx.problem("the poller never said it could not store a batch")
    said = d.grep(r"No space left on device", since=mark)
    if said:
        ctx.note("disk full: daemon said %r", said[0][-90:])
    else:
        ctx.problem("the log does not say 'No space left on device'")
    # Nothing may be confirmed while nothing can be journaled.
    c0 = fake.stats()["confirmed_offset"]
    t_end = time.monotonic() + full_s
    moved = []
    while time.monotonic() < t_end:	# the outage lasts full_s seconds
        c = fake.stats()["confirmed_offset"]
        if c != c0:
            moved.append(c)
        time.sleep(0.05)
    if moved:
        ctx.problem("offset confirmed while the disk was full: %d -> %d"
                    % (c0, moved[-1]))
    if fake.stats()["available"] == 0:
        ctx.problem("no update was waiting while the disk was full: the "
                    "run proves nothing (raise the count)")
    if not d.running():
        ctx.problem("daemon died on a full disk (status %s)"
                    % d.proc.returncode)
        d.start()
    ended_full = len(rec.ended())
    os.unlink(filler)
    rec = ctx.finish(fake, d, ids, timeout=count / rate + 120)
    ctx.note("confirmed offset held at %d for %.0fs; %d ended before space "
             "returned", c0, full_s, ended_full)

    # read-only state directory at start
    ids2 = ctx.generate(fake, P(ctx, 500, 200), 50, rate=0)
    c1 = fake.stats()["confirmed_offset"]
    _remount(state, "ro")
    mark = len(d.lines)
    d.start()
    ro = None
    try:
        ro = d.wait_log(r"(?i)read-only file system", 20, since=mark)
    except AssertionError:
        ctx.problem("read-only state_dir: the log does not say "
                    "'Read-only file system'")
    if ro:
        ctx.note("read-only: daemon said %r", ro.string[-90:])
    exited = None
    try:
        exited = d.wait_exit(10)
    except AssertionError:
        pass
    ctx.note("read-only: the daemon %s", "exited with status %s" % exited
             if exited is not None else "kept running")
    if exited == 0:
        ctx.problem("exit status 0 on an unusable state_dir")
    if fake.stats()["confirmed_offset"] != c1:
        ctx.problem("updates confirmed with a read-only journal")
    _remount(state, "rw")
    if exited is not None:
        d.start()
    d.wait_ready(30)
    rec = ctx.finish(fake, d, ids2, timeout=60)
    ctx.judge(rec, ids + ids2)


def fsize_limit(ctx):
    """The daemon's RLIMIT_FSIZE is hit while it journals (prlimit on the
    running daemon).  It must not die of SIGXFSZ: a write past the limit
    must fail with EFBIG, be reported, and leave the batch unconfirmed;
    once the limit is lifted everything is delivered."""
    if not subprocess.run(["sh", "-c", "command -v prlimit"],
                          stdout=subprocess.DEVNULL).returncode == 0:
        raise Skip("prlimit not installed")
    count = P(ctx, 3000, 1200)
    rate = P(ctx, 200, 300)
    fake = ctx.start_fake()
    d = ctx.start_daemon(fake, workers=4,
                         worker_env={"TG_SLEEP_MS": "0-10"})
    ids = ctx.generate(fake, count, 200, rate=rate)
    rec = d.records()
    wait_until(lambda: len(rec.ended()) >= count // 4 or not d.running(),
               60, what="a quarter ended")
    kills = []
    # the workers live in their own process groups: if the daemon dies
    # they must be waited for before the records are final
    wpids = d.worker_pids()
    # the journal writes zeros ahead of its records (proto/JOURNAL.md): the
    # records end at its last non-zero byte, and the limit goes 4 KiB past
    # them, inside the file
    size = 0
    for f in os.listdir(d.state_dir):
        with open(os.path.join(d.state_dir, f), "rb") as fp:
            size = max(size, len(fp.read().rstrip(b"\0")))
    limit = size + 4096
    mark = len(d.lines)
    # only the soft limit: raising it back needs no privilege
    subprocess.run(["prlimit", "--pid", str(d.pid),
                    "--fsize=%d:unlimited" % limit], check=True)
    ctx.note("RLIMIT_FSIZE=%d on the running daemon (journal %d bytes)",
             limit, size)
    try:
        m = d.wait_log(r"(?i)file too large|could not store", 20,
                       since=mark)
        ctx.note("daemon said %r", m.string[-90:])
    except AssertionError:
        if not d.running():
            ctx.problem("daemon killed by %s at RLIMIT_FSIZE (SIGXFSZ not "
                        "ignored)" % (signal.Signals(-d.proc.returncode).name
                                      if d.proc.returncode < 0 else
                                      d.proc.returncode))
        else:
            ctx.problem("the log does not say the journal write failed")
    if d.running():
        time.sleep(1.0)		# a while at the limit
        subprocess.run(["prlimit", "--pid", str(d.pid),
                        "--fsize=unlimited:unlimited"], check=True)
    else:
        # it died: a crash as far as the records go (its workers too)
        t = d.crash()
        for p in wpids:
            _kill(p, signal.SIGKILL)
        wait_until(lambda: all(tgtest.pid_gone(p) for p in wpids), 10,
                   what="the dead daemon's workers gone")
        kills.append((rec.line_count(), t))
        d.start()		# on the same state: replay, nothing lost
        d.wait_ready(30)
    rec = ctx.finish(fake, d, ids, timeout=count / rate + 120)
    ctx.judge(rec, ids, kills=kills, dup_grace=1.0)


SCENARIOS = [
    ("worker_sigkill", worker_sigkill),
    ("worker_sigstop", worker_sigstop),
    ("worker_misbehave", worker_misbehave),
    ("daemon_sigkill", daemon_sigkill),
    ("api_faults", api_faults),
    ("disk_full", disk_full),
    ("fsize_limit", fsize_limit),
]
