#!/usr/bin/env python3
"""Running tgrunnerd like a real Linux service: reload (bad file kept out,
pool resized and replaced under load without losing or reordering
updates), the sd_notify protocol (READY, STATUS, WATCHDOG, RELOADING,
STOPPING) on a notify socket bound here, Prometheus /metrics parsed
strictly and checked against the work done, the control socket (mode,
tgrunnerctl status/--json/drain/resume, foreign uids refused), SIGTERM past
shutdown_timeout, and the systemd unit's `systemd-analyze security` score.

About 25 s on 2 cores (45 s under ASan).  The foreign-uid test needs root
(it switches to nobody); the unit score needs systemd-analyze with
--offline (both skip otherwise).
"""

import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from unittest import mock

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import promparse				# noqa: E402
import tgtest					# noqa: E402
from tgtest import ScenarioCase, ctl, free_port, key_chat, wait_until  # noqa: E402,E501

WORKER_COMM = "tg-test-wor"	# comm of the test worker (maybe lt-...)


def live_workers(sock):
    """pid -> state of the pool's workers, from the control socket."""
    return {w["pid"]: w["state"] for w in ctl(sock, "workers")["workers"]
            if w["pid"] > 0 and not tgtest.pid_gone(w["pid"])}


def proc_environ(pid):
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            return dict(e.split(b"=", 1) for e in f.read().split(b"\0")
                        if b"=" in e)
    except OSError:
        return {}


def worker_procs(pool_pids):
    """The test worker processes of the pool's pids: the pool may report
    the /bin/sh that runs worker_command, the worker being its child."""
    out = []
    for pid in pool_pids:
        out += [p for p in [pid] + tgtest.descendants(pid)
                if WORKER_COMM in (tgtest._proc_comm(p) or "")]
    return out


class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET:
    records (monotonic time, sender pid, {field: value}) per datagram."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.msgs = []
        self.cond = threading.Condition()
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        csize = socket.CMSG_SPACE(struct.calcsize("3i"))
        while not self.stopped:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, csize)
            except socket.timeout:
                continue
            except OSError:
                return
            pid = None
            for level, typ, cdata in anc:
                if level == socket.SOL_SOCKET and \
                        typ == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", cdata[:12])[0]
            fields = {}
            for line in data.decode("utf-8", "replace").split("\n"):
                if "=" in line:
                    k, v = line.split("=", 1)
                    fields[k] = v
            with self.cond:
                self.msgs.append((time.monotonic(), pid, fields))
                self.cond.notify_all()

    def close(self):
        self.stopped = True
        self.thread.join(2)
        self.sock.close()

    def snapshot(self):
        with self.cond:
            return list(self.msgs)

    def wait_for(self, key, value=None, since=0, timeout=20.0):
        """Index of the first message from index since with key (=value)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(since, len(self.msgs)):
                    f = self.msgs[i][2]
                    if key in f and (value is None or f[key] == value):
                        return i
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        "no %s%s from the daemon in %.0fs; got %r"
                        % (key, "" if value is None else "=" + value,
                           timeout, [m[2] for m in self.msgs[since:]]))
                self.cond.wait(left)


class Service(ScenarioCase):

    def daemon(self, fake, name="d", **kw):
        kw.setdefault("control_socket", os.path.join(self.tmp, name + ".sock"))
        return self.start_daemon(fake, name=name, **kw)

    def reload(self, d, **changes):
        """Rewrite the config with changes, SIGHUP; returns the log index
        where the reload began."""
        since = len(d.lines)
        d._apply(changes)
        d._write_conf()
        d.kill(signal.SIGHUP)
        return since

    # -- (1) reload with a bad file -----------------------------------------

    def test_reload_bad_config_keeps_running_one(self):
        fake = self.start_fake()
        d = self.daemon(fake, workers=2, worker_env={"TG_SLEEP_MS": "0-2"})
        sock = d.conf["control_socket"]
        ids = self.generate(fake, 300, 30)
        rec = d.records()
        rec.wait_ended(ids, 60, daemon=d)
        before = live_workers(sock)
        self.assertEqual(len(before), 2, before)

        # a value error: the file names the line
        since = self.reload(d, workers="lots")
        line = list(d.conf).index("workers") + 2	# after the header
        d.wait_log(r"reload: %s:%d: workers: expected an integer.*; keeping "
                   r"the running configuration" % (re.escape(d.conf_path),
                                                   line), since=since)
        # an error after a valid change: nothing of the file is applied
        d.conf["workers"] = 5
        since = self.reload(d, bogus_option="1")
        d.wait_log(r"reload: .*unknown option 'bogus_option'.*keeping",
                   since=since)
        self.assertEqual(d.grep(r"reloaded ", since=0), [])

        # still the same workers, still processing
        more = self.generate(fake, 300, 30)
        rec.wait_ended(more, 60, daemon=d)
        self.assertEqual(live_workers(sock), before)
        self.assertTrue(d.running())
        st = ctl(sock, "status")
        self.assertEqual(st["state"], "running")
        self.assertIsNone(st.get("problem"))

        # and a good file afterwards is taken
        del d.conf["bogus_option"]
        since = self.reload(d, workers=3)
        d.wait_log(r"reloaded .*workers=3", since=since)
        wait_until(lambda: len(live_workers(sock)) == 3, 20,
                   what="3 workers after a good reload")
        # options that need a restart are named, and keep their values
        since = self.reload(d, session_key="user", journal_fsync="always")
        d.wait_log(r"reload: journal_fsync,session_key changed but take "
                   r"effect only at the next start", since=since)
        d.wait_log(r"reloaded .*changed=none workers=3$", since=since)
        self.assertEqual(ctl(sock, "status")["session_key"], "chat")
        rec = self.finish(fake, d, ids + more)
        self.assertReport(rec.check(ids + more, key_of=key_chat), d)

    # -- (2) reload under load -----------------------------------------------

    def test_reload_resize_and_replace_under_load(self):
        fake = self.start_fake()
        d = self.daemon(fake, workers=2,
                        worker_env={"TG_SLEEP_MS": "1-4"})
        sock = d.conf["control_socket"]
        rec = d.records()
        # a steady stream for the whole test: ~8 s at 600/s, 150 chats
        ids = self.generate(fake, 5000, 150, rate=600)

        def ended_more(n):
            target = len(rec.ended()) + n
            wait_until(lambda: len(rec.ended()) >= target, 60,
                       what="%d more updates ended" % n)

        ended_more(200)
        gen1 = live_workers(sock)
        self.assertEqual(len(gen1), 2)
        real1 = worker_procs(gen1)

        # up: the running workers stay, three join
        since = self.reload(d, workers=5)
        d.wait_log(r"reloaded .*workers=5$", since=since)
        wait_until(lambda: len(live_workers(sock)) == 5, 20,
                   what="5 workers")
        up = live_workers(sock)
        self.assertTrue(set(gen1) <= set(up), (gen1, up))
        ended_more(300)

        # down: four are drained and exit, one stays
        since = self.reload(d, workers=1)
        d.wait_log(r"reloaded .*workers=1$", since=since)
        wait_until(lambda: len(live_workers(sock)) == 1, 20,
                   what="1 worker")
        self.assertTrue(set(live_workers(sock)) <= set(up))
        ended_more(300)

        # a new worker_command (same binary, another spelling): all replaced
        since = self.reload(d, workers=3, worker_command="env TG_GEN=2 %s"
                            % tgtest.worker_path())
        d.wait_log(r"reloaded .*workers=3 \(replacing workers\)",
                   since=since)
        old = set(up)
        wait_until(lambda: (lambda w: len(w) == 3 and not set(w) & old and
                            set(w.values()) == {"ready"})(
            live_workers(sock)), 30, what="3 new workers ready, old ones gone")
        gen3 = live_workers(sock)
        real3 = worker_procs(gen3)
        self.assertEqual(len(real3), 3, real3)
        for p in real3:
            self.assertEqual(proc_environ(p).get(b"TG_GEN"), b"2",
                             "worker %d does not run the new command" % p)
        self.assertTrue(all(tgtest.pid_gone(p) for p in old))
        ended_more(300)
        self.assertLess(len(rec.ended()), len(ids),
                        "the load ended before the last reload: the test "
                        "did not reload under load")

        rec = self.finish(fake, d, ids, timeout=120)
        rep = rec.check(ids, key_of=key_chat)
        sys.stderr.write(rep.summary() + "\n")
        self.assertReport(rep, d)
        pids = {r.pid for r in rec.recs}
        self.assertTrue(pids & set(real1) and pids & set(real3),
                        (pids, real1, real3))
        # a clean reload: not one warning or error
        self.assertEqual(d.grep(r"^<[0-4]>"), [])

    # -- (3) sd_notify -------------------------------------------------------

    def notify_daemon(self, fake, name="d", **kw):
        """A daemon started through sh, which sets WATCHDOG_PID to the pid
        it then execs tgrunnerd with (as systemd does)."""
        ns = NotifySocket(os.path.join(self.tmp, name + ".notify"))
        self.addCleanup(ns.close)
        wrapper = os.path.join(self.tmp, "tgrunnerd-wrapper")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nWATCHDOG_PID=$$; export WATCHDOG_PID\n"
                    "exec %s \"$@\"\n" % tgtest.daemon_path())
        os.chmod(wrapper, 0o755)
        env = dict(kw.pop("worker_env", {}))
        env.update({"NOTIFY_SOCKET": ns.path, "WATCHDOG_USEC": "2000000"})
        with mock.patch.object(tgtest, "daemon_path", lambda: wrapper):
            d = self.start_daemon(fake, name=name, worker_env=env,
                                  wait=False, **kw)
        return d, ns

    def test_sd_notify(self):
        fake = self.start_fake()
        d, ns = self.notify_daemon(fake, workers=2,
                                   worker_env={"TG_SLEEP_MS": "0-2",
                                               "TG_ENVDUMP": os.path.join(
                                                   self.tmp, "env")})
        ready = ns.wait_for("READY", "1")
        d.wait_ready(5)
        ids = self.generate(fake, 200, 20)
        d.records().wait_ended(ids, 30, daemon=d)
        # watchdog pings for a while: four after READY
        n0 = sum(1 for m in ns.snapshot() if "WATCHDOG" in m[2])
        wait_until(lambda: sum(1 for m in ns.snapshot()
                               if "WATCHDOG" in m[2]) >= n0 + 4, 10,
                   what="4 more WATCHDOG=1")
        hup = len(ns.snapshot())
        d.kill(signal.SIGHUP)
        reloading = ns.wait_for("RELOADING", "1", since=hup)
        ready2 = ns.wait_for("READY", "1", since=reloading)
        d.wait_log(r"reloaded ")
        term = len(ns.snapshot())
        rc = d.stop()
        self.assertEqual(rc, 0, d.log_tail())
        stopping = ns.wait_for("STOPPING", "1", since=term)
        msgs = ns.snapshot()

        # order: READY, RELOADING, READY, STOPPING, once each
        seq = [(k, i) for i, m in enumerate(msgs) for k in
               ("READY", "RELOADING", "STOPPING") if k in m[2]]
        self.assertEqual([k for k, _ in seq],
                         ["READY", "RELOADING", "READY", "STOPPING"], seq)
        self.assertLess(ready, reloading)
        self.assertLess(reloading, ready2)
        self.assertLess(ready2, stopping)
        # every datagram from the daemon itself, none from a worker
        self.assertEqual({m[1] for m in msgs}, {d.pid})
        # STATUS lines: at ready, then periodic ones with the numbers
        status = [m[2]["STATUS"] for m in msgs if "STATUS" in m[2]]
        self.assertIn("polling", status)
        self.assertTrue(any(re.match(r"running: backlog=\d+ running=\d+ "
                                     r"done=200 dead=0 poll=", s)
                            for s in status), status)
        # WATCHDOG=1 every second (WATCHDOG_USEC=2s: pings at half of
        # it), from start to exit, including around the reload; a late
        # timer on a loaded machine is fine as long as systemd, which acts
        # after 2s, never would
        wd = [m[0] for m in msgs if m[2].get("WATCHDOG") == "1"]
        self.assertGreaterEqual(len(wd), 4)
        gaps = [b - a for a, b in zip(wd, wd[1:])]
        sys.stderr.write("watchdog: %d pings, max gap %.3fs\n"
                         % (len(wd), max(gaps)))
        self.assertLess(max(gaps), 2.0, gaps)
        # the workers were not given the notify socket or watchdog
        dumps = [p for p in os.listdir(self.tmp) if p.startswith("env.")]
        self.assertTrue(dumps)
        for p in dumps:
            with open(os.path.join(self.tmp, p)) as f:
                text = f.read()
            for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                self.assertNotIn(var + "=", text, p)

    def test_sd_notify_no_ready_when_token_rejected(self):
        fake = self.start_fake()
        d, ns = self.notify_daemon(fake, workers=1, token="999:WRONG-TOKEN")
        rc = d.wait_exit(20)
        self.assertEqual(rc, 77, d.log_tail())
        self.assertFalse([m for m in ns.snapshot() if "READY" in m[2]],
                         "READY=1 sent although getMe failed")

    # -- (4) /metrics --------------------------------------------------------

    def known_options(self):
        """Option names this tgrunnerd knows (from -n -v)."""
        path = os.path.join(self.tmp, "probe.conf")
        with open(path, "w") as f:
            f.write("worker_command = /bin/true\n")
        out = subprocess.run([tgtest.daemon_path(), "-n", "-v", "-c", path],
                             capture_output=True, text=True).stdout
        return set(re.findall(r"(?m)^(\w+) =", out))

    def scrape(self, port, path="/metrics"):
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path),
                                    timeout=10) as r:
            self.assertEqual(r.status, 200)
            self.assertTrue(r.headers["Content-Type"].startswith(
                "text/plain; version=0.0.4"), r.headers["Content-Type"])
            return r.read().decode("utf-8")

    def test_metrics(self):
        fake = self.start_fake()
        port = free_port()
        n, workers = 600, 3
        extra = {}
        if "flood_control" in self.known_options():
            extra["flood_control"] = False	# 600 replies at 30/s: 20 s
        d = self.daemon(fake, workers=workers,
                        metrics_listen="127.0.0.1:%d" % port, max_attempts=10,
                        worker_env={"TG_SLEEP_MS": "0-3", "TG_REPLY": "1",
                                    "TG_FAIL": "0.1"}, **extra)
        fams = promparse.parse(self.scrape(port))
        self.assertEqual(promparse.value(fams, "tgrunner_updates_done_total"),
                         0)
        ids = self.generate(fake, n, 40)
        rec = d.records()
        rec.wait_ended(ids, 60, daemon=d)
        self.wait_confirmed(fake, max(ids))
        wait_until(lambda: len(fake.calls("sendMessage")) >= n, 20,
                   what="%d replies sent" % n)
        text = self.scrape(port)
        fams = promparse.parse(text)
        v = lambda name, **l: promparse.value(fams, name, l)	# noqa: E731
        fails = rec.count("F")
        sys.stderr.write("metrics: %d families, %d bytes, %d failures "
                         "retried\n" % (len(fams), len(text), fails))
        self.assertGreater(fails, 0, "TG_FAIL=0.1 made nothing fail")
        self.assertEqual(v("tgrunner_updates_fetched_total"), n)
        self.assertEqual(v("tgrunner_updates_done_total"), n)
        self.assertEqual(v("tgrunner_updates_failed_total"), fails)
        self.assertEqual(v("tgrunner_updates_retried_total"), fails)
        self.assertEqual(v("tgrunner_updates_dead_total"), 0)
        self.assertEqual(v("tgrunner_updates_duplicate_total"), 0)
        self.assertEqual(v("tgrunner_updates_replayed_total"), 0)
        self.assertEqual(v("tgrunner_backlog"), 0)
        self.assertEqual(v("tgrunner_inflight"), 0)
        self.assertEqual(v("tgrunner_keys_busy"), 0)
        self.assertEqual(v("tgrunner_journal_pending"), 0)
        self.assertEqual(v("tgrunner_workers_alive"), workers)
        self.assertEqual(v("tgrunner_worker_spawned_total"), workers)
        self.assertEqual(v("tgrunner_worker_restarts_total"), 0)
        self.assertEqual(v("tgrunner_api_calls_total"),
                         len(fake.calls("sendMessage")))
        self.assertEqual(v("tgrunner_api_errors_total"), 0)
        self.assertEqual(v("tgrunner_api_calls_by_method_total",
                           method="sendMessage", outcome="ok"),
                         len(fake.calls("sendMessage")))
        polls = v("tgrunner_polls_total")
        self.assertGreater(polls, 0)
        self.assertLessEqual(abs(polls - fake.stats()["polls"]), 1)
        for cls in ("5xx", "429", "409", "transport", "malformed"):
            self.assertEqual(v("tgrunner_poll_errors_total", **{"class": cls}),
                             0)
        self.assertAlmostEqual(v("tgrunner_last_poll_success_timestamp_"
                                 "seconds"), time.time(), delta=10)
        h = promparse.histogram(fams, "tgrunner_handler_duration_seconds")
        # one observation per done (failed attempts are not timed)
        self.assertEqual(h["count"], n)
        self.assertGreater(h["sum"], 0)
        h = promparse.histogram(fams, "tgrunner_dispatch_latency_seconds")
        self.assertEqual(h["count"], n)	# first attempts only
        # other paths and methods
        with self.assertRaises(urllib.error.HTTPError) as cm:
            self.scrape(port, "/")
        self.assertEqual(cm.exception.code, 404)
        req = urllib.request.Request("http://127.0.0.1:%d/metrics" % port,
                                     data=b"x", method="POST")
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(req, timeout=10)
        # 405 from tgrunnerd's handler, or 501 from libevent's method filter
        self.assertIn(cm.exception.code, (405, 501))
        self.assertEqual(d.stop(), 0)

    def test_metrics_non_loopback_refused(self):
        fake = self.start_fake()
        for i, addr in enumerate(("0.0.0.0:%d" % free_port(),
                                  "example.com:9100", "[::]:9100")):
            with self.subTest(metrics_listen=addr):
                d = self.start_daemon(fake, name="m%d" % i, wait=False,
                                      metrics_listen=addr)
                rc = d.wait_exit(20)
                self.assertEqual(rc, 78, d.log_tail())
                self.assertTrue(d.grep(r"tgrunner\.conf:\d+: metrics_listen: "
                                       r".*not a loopback address"),
                                d.log_tail())
                self.assertFalse(fake.stats()["polls"],
                                 "polled before refusing")

    def test_promparse_is_strict(self):
        good = ("# HELP a_total A.\n# TYPE a_total counter\na_total 1\n"
                "# HELP h H.\n# TYPE h histogram\n"
                "h_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
                "h_sum 0.3\nh_count 2\n")
        promparse.parse(good)
        bad = {
            "no newline": good[:-1],
            "no TYPE": "# HELP x X.\nx 1\n",
            "no HELP": "# TYPE x gauge\nx 1\n",
            "bad name": "# HELP 1x X.\n# TYPE 1x gauge\n1x 1\n",
            "bad value": "# HELP x X.\n# TYPE x gauge\nx one\n",
            "bad label": "# HELP x X.\n# TYPE x gauge\nx{a=b} 1\n",
            "label twice": "# HELP x X.\n# TYPE x gauge\nx{a=\"1\",a=\"2\"} 1\n",
            "dup series": "# HELP x X.\n# TYPE x gauge\nx 1\nx 2\n",
            "counter name": "# HELP c C.\n# TYPE c counter\nc 1\n",
            "negative counter": "# HELP c_total C.\n# TYPE c_total counter\n"
                                "c_total -1\n",
            "interleaved": "# HELP x X.\n# TYPE x gauge\n# HELP y Y.\n"
                           "# TYPE y gauge\nx{a=\"1\"} 1\ny 1\nx{a=\"2\"} 1\n",
            "not cumulative": good.replace("h_bucket{le=\"+Inf\"} 2",
                                           "h_bucket{le=\"+Inf\"} 0"
                                           ).replace("h_count 2", "h_count 0"),
            "no +Inf": good.replace("h_bucket{le=\"+Inf\"} 2\n", ""),
            "count != +Inf": good.replace("h_count 2", "h_count 3"),
            "no sum": good.replace("h_sum 0.3\n", ""),
            "le order": good.replace("h_bucket{le=\"0.1\"} 1\n", "") +
            "",
        }
        bad["le order"] = good.replace(
            "h_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\n",
            "h_bucket{le=\"0.5\"} 1\nh_bucket{le=\"0.1\"} 1\n"
            "h_bucket{le=\"+Inf\"} 2\n")
        for what, text in bad.items():
            with self.subTest(what):
                with self.assertRaises(promparse.PromParseError):
                    promparse.parse(text)

    # -- (5) control socket --------------------------------------------------

    def tgrunnerctl(self, sock, *args, user=None):
        argv = [tgtest.build_path("tgrunnerctl"), "-s", sock] + list(args)
        kw = {}
        if user is not None:
            kw["preexec_fn"] = lambda: (os.setgroups([]),
                                        os.setgid(user.pw_gid),
                                        os.setuid(user.pw_uid))
        p = subprocess.run(argv, capture_output=True, timeout=20,
                           stdin=subprocess.DEVNULL, **kw)
        return (p.returncode, p.stdout.decode("utf-8", "replace"),
                p.stderr.decode("utf-8", "replace"))

    def test_control_socket(self):
        fake = self.start_fake()
        d = self.daemon(fake, workers=3, worker_env={"TG_SLEEP_MS": "0-2"})
        sock = d.conf["control_socket"]
        st = os.lstat(sock)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        self.assertEqual(st.st_uid, os.geteuid())
        ids = self.generate(fake, 100, 10)
        d.records().wait_ended(ids, 30, daemon=d)
        wait_until(lambda: list(live_workers(sock).values()) ==
                   ["ready"] * 3, 20, what="3 workers ready")

        rc, out, err = self.tgrunnerctl(sock, "status")
        self.assertEqual(rc, 0, err)
        version = subprocess.run([tgtest.daemon_path(), "-V"],
                                 capture_output=True, text=True).stdout.split()
        self.assertRegex(out, r"^tgrunnerd %s, running, bot @fake_bot, up "
                         r"\d+s\n" % re.escape(version[1]))
        self.assertRegex(out, r"updates: +100 fetched, 100 done")
        self.assertEqual(len(re.findall(r"(?m)^\d+ +\d+ +(ready|busy)", out)),
                         3, out)

        rc, out, err = self.tgrunnerctl(sock, "--json", "status")
        self.assertEqual(rc, 0, err)
        s = json.loads(out)
        self.assertIs(s["ok"], True)
        self.assertEqual(s["version"], version[1])
        self.assertEqual(s["state"], "running")
        self.assertEqual(s["bot"], "fake_bot")
        self.assertIsInstance(s["uptime"], int)
        self.assertGreaterEqual(s["uptime"], 0)
        self.assertEqual(s["session_key"], "chat")
        self.assertEqual(s["offset"], max(ids) + 1)
        for k in ("queued", "ready", "running", "keys_busy", "max_pending"):
            self.assertIsInstance(s["backlog"][k], int, k)
        self.assertEqual(s["backlog"]["queued"], 0)
        self.assertEqual(s["updates"]["fetched"], 100)
        self.assertEqual(s["updates"]["done"], 100)
        self.assertEqual(s["pool"]["spawned"], 3)
        self.assertEqual(len(s["workers"]), 3)
        for w in s["workers"]:
            self.assertFalse(tgtest.pid_gone(w["pid"]), w)
            for k in ("id", "state", "slots", "busy", "served"):
                self.assertIn(k, w)
        self.assertEqual(sum(w["served"] for w in s["workers"]), 100)
        self.assertNotIn(fake.token.split(":")[1], out)

        # drain: no more getUpdates; what Telegram has waits there
        self.wait_confirmed(fake, max(ids))
        rc, out, err = self.tgrunnerctl(sock, "drain")
        self.assertEqual((rc, out), (0, "drain: ok\n"), err)
        self.assertEqual(ctl(sock, "status")["state"], "draining")
        polls = fake.stats()["polls"]
        later = self.generate(fake, 50, 5)
        # a polling daemon (poll_timeout 1s) would poll twice in this window
        t_end = time.monotonic() + 2.5
        while time.monotonic() < t_end:
            st = fake.stats()
            self.assertEqual(st["polls"], polls, "getUpdates while draining")
            self.assertEqual(st["available"], 50)
            time.sleep(0.1)
        self.assertEqual(d.records().missing(later), later)
        self.assertEqual(ctl(sock, "status")["updates"]["fetched"], 100)
        # a second drain is not an error: the daemon is where it was asked
        rc, out, err = self.tgrunnerctl(sock, "drain")
        self.assertEqual((rc, out), (0, "drain: ok (already draining)\n"),
                         err)
        self.assertEqual(ctl(sock, "status")["state"], "draining")

        rc, out, err = self.tgrunnerctl(sock, "resume")
        self.assertEqual((rc, out), (0, "resume: ok\n"), err)
        d.records().wait_ended(later, 30, daemon=d)
        self.assertEqual(ctl(sock, "status")["state"], "running")
        rc, out, err = self.tgrunnerctl(sock, "resume")
        self.assertEqual((rc, out), (0, "resume: ok (already running)\n"),
                         err)
        rc, out, err = self.tgrunnerctl(sock, "frobnicate")
        self.assertEqual(rc, 64)		# EX_USAGE
        self.assertIn("unknown command", err)
        self.assertEqual(d.stop(), 0)
        self.assertFalse(os.path.exists(sock), "socket left after exit")

    def test_control_socket_foreign_uid(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to run a client as nobody")
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            self.skipTest("no user nobody")
        fake = self.start_fake()
        d = self.daemon(fake, name="c", workers=1)
        sock = d.conf["control_socket"]
        # nobody may traverse to the socket: only its mode stops it
        os.chmod(self.tmp, 0o711)
        self.assertEqual(self.connect_as(nobody, sock), "EACCES")
        # a copy of tgrunnerctl that nobody can run (the build tree may be
        # in a private home)
        ctlbin = os.path.join(self.tmp, "tgrunnerctl")
        shutil.copy(tgtest.build_path("tgrunnerctl"), ctlbin)
        os.chmod(ctlbin, 0o755)
        p = subprocess.run([ctlbin, "-s", sock, "status"], capture_output=True,
                           text=True, timeout=20, preexec_fn=lambda: (
                               os.setgroups([]), os.setgid(nobody.pw_gid),
                               os.setuid(nobody.pw_uid)))
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("Permission denied", p.stderr)
        # behind the mode, the daemon checks the peer's credentials
        os.chmod(sock, 0o666)
        try:
            self.assertEqual(self.connect_as(nobody, sock, send=True),
                             "refused")
        finally:
            os.chmod(sock, 0o600)
        d.wait_log(r"control: connection from a foreign user refused", 5)
        # root still gets in
        self.assertEqual(ctl(sock, "status")["state"], "running")

    @staticmethod
    def connect_as(user, path, send=False):
        """In a child running as user: connect (and send status).  Returns
        "EACCES", "refused" (closed without an answer), "answered" or an
        error name."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:		# child: no Python cleanup, just the verdict
            verdict = "?"
            try:
                os.close(r)
                os.setgroups([])
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(10)
                try:
                    s.connect(path)
                    if send:
                        s.sendall(b"status\n")
                        verdict = "answered" if s.recv(100) else "refused"
                    else:
                        verdict = "connected"
                except (ConnectionResetError, BrokenPipeError):
                    verdict = "refused"
                except OSError as e:
                    verdict = "EACCES" if e.errno == 13 else repr(e)
            except BaseException as e:
                verdict = repr(e)
            os.write(w, verdict.encode())
            os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            verdict = f.read().decode()
        os.waitpid(pid, 0)
        return verdict

    # -- (6) SIGTERM past shutdown_timeout -----------------------------------

    def test_sigterm_past_shutdown_timeout(self):
        """Complements test_shutdown.py (drain within the timeout): here the
        handlers outlast shutdown_timeout.  The daemon still exits 0 soon
        after it, the journal keeps everything unfinished, and the next
        start replays exactly that, with attempt > 1 for what had started."""
        fake = self.start_fake()
        d = self.daemon(fake, workers=2, shutdown_timeout="1s",
                        kill_grace="500ms", update_timeout="30s",
                        worker_env={"TG_SLEEP_MS": "4000"})
        ids = self.generate(fake, 200, 40)
        rec = d.records()
        wait_until(lambda: rec.count("S") >= 2, 30,
                   what="both workers busy with a slow update")
        t_term = time.time_ns()
        t0 = time.monotonic()
        d.kill(signal.SIGTERM)
        rc = d.wait_exit(15)
        took = time.monotonic() - t0
        sys.stderr.write("exit %s after %.2fs\n" % (rc, took))
        self.assertEqual(rc, 0, d.log_tail())
        self.assertLess(took, 1 + 0.5 + 0.5 + 2.5)	# timeout, grace, slack
        d.wait_log(r"shutdown_timeout passed with \d+ update\(s\) in "
                   r"progress")
        self.assertEqual(d.check_leftovers(), [])
        left = rec.missing(ids)
        self.assertTrue(left)
        m = d.wait_log(r"stopped: done=\d+ dead=0, (\d+) update\(s\) left "
                       r"in the journal")
        self.assertEqual(int(m.group(1)), len(left))
        stop_point = (rec.line_count(), t_term)

        d.restart(worker_env={"TG_SLEEP_MS": "0-2"},
                  worker_command=tgtest.worker_path())
        m = d.wait_log(r"replaying (\d+) unfinished update\(s\)")
        self.assertEqual(int(m.group(1)), len(left))
        rec = self.finish(fake, d, ids)
        rep = rec.check(ids, key_of=key_chat, kills=[stop_point],
                        check_replay_attempts=True, dup_grace=0)
        self.assertReport(rep, d)

    # -- the unit ------------------------------------------------------------

    def test_unit_security_exposure(self):
        sa = shutil.which("systemd-analyze")
        if sa is None:
            self.skipTest("no systemd-analyze")
        helptext = subprocess.run([sa, "--help"], capture_output=True,
                                  text=True).stdout
        if "--offline" not in helptext:
            self.skipTest("systemd-analyze without --offline")
        # the units as built (both come from systemd/tgrunnerd.service.in)
        for name, built in (("tgrunnerd.service", "tgrunnerd.service"),
                            ("tgrunnerd@test.service", "tgrunnerd@.service")):
            with open(tgtest.build_path(os.path.join("systemd", built))) as f:
                unit = f.read()
            self.assertNotIn("@", unit.replace("@system-service", "").replace(
                "~@privileged", "").replace("tgrunnerd@", ""))
            path = os.path.join(self.tmp, name)
            with open(path, "w") as f:
                f.write(unit)
            p = subprocess.run([sa, "security", "--offline=true",
                                "--no-pager", path], capture_output=True,
                               text=True, timeout=60)
            m = re.search(r"Overall exposure level for %s: ([\d.]+) (\w+)"
                          % re.escape(name), p.stdout + p.stderr)
            self.assertIsNotNone(m, p.stdout + p.stderr)
            sys.stderr.write("systemd-analyze security %s: %s %s\n"
                             % (name, m.group(1), m.group(2)))
            self.assertIn(m.group(2), ("PERFECT", "SAFE", "OK"), p.stdout)
            # JIT runtimes (Node.js) need W+X pages: never trade them for
            # score
            self.assertNotRegex(unit,
                                r"(?m)^MemoryDenyWriteExecute=(yes|true|1)")

if __name__ == "__main__":
    tgtest.main()
