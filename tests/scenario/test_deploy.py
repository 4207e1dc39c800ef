#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""Deploying without downtime, and reloads that tell the truth.

restart-workers (tgrunnerctl, SIGUSR2) under load: the workers are
replaced one at a time by workers of a new version (the test worker runs
under a script that reads the version from a file at start, as a deploy
changes the code on disk), a new worker up and welcomed before an old one
is told to go, the updates an old one holds finished there, nothing lost
or run twice, per-chat order and exclusion kept (tgtest's checker), every
update after the restart run by a new worker, progress in status.  A new
version that does not start stops the restart and leaves the old workers
running; a second restart during one starts it over; external workers are
skipped and named.

tgrunnerctl reload waits for the outcome: a refused file exits 1 with
file:line, a good one 0, options that need a restart are a warning; the
units reload through tgrunnerctl.  And the daemon's idempotent answers:
drain while draining, resume while running, dead-letters retry of an id
that is not there (or not an id).

About 40 s on 2 cores.
"""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402
from tgtest import ScenarioCase, ctl, key_chat, wait_until	# noqa: E402


class Versioned:
    """worker_command: a script that sources version.env (as an
    application reads its code and settings at start) and execs the test
    worker, which dumps its environment to envdump.<pid>.  Which version a
    worker process runs is in that dump."""

    def __init__(self, tmp):
        self.dir = os.path.join(tmp, "app")
        os.makedirs(self.dir)
        self.env_file = os.path.join(self.dir, "version.env")
        self.envdump = os.path.join(self.dir, "envdump")
        self.script = os.path.join(self.dir, "worker.sh")
        with open(self.script, "w") as f:
            f.write("#!/bin/sh\n. %s\nexport TG_VERSION\nexec %s\n"
                    % (shlex.quote(self.env_file),
                       shlex.quote(tgtest.worker_path())))
        os.chmod(self.script, 0o755)
        self.set("1")

    def set(self, version, extra=""):
        tmp = self.env_file + ".new"
        with open(tmp, "w") as f:
            f.write("TG_VERSION=%s\n%s" % (version, extra))
        os.rename(tmp, self.env_file)		# as a deploy would

    def version_of(self, pid):
        try:
            with open("%s.%d" % (self.envdump, pid)) as f:
                for line in f:
                    if line.startswith("TG_VERSION="):
                        return line.strip().split("=", 1)[1]
        except FileNotFoundError:
            return None
        return None


class Deploy(ScenarioCase):

    def daemon(self, fake, app, name="d", **kw):
        env = {"TG_ENVDUMP": app.envdump}
        env.update(kw.pop("worker_env", {}))
        return self.start_daemon(fake, name=name, worker_command=app.script,
                                 worker_env=env, **kw)

    def ctl(self, d, *args, timeout=120):
        p = subprocess.run([tgtest.build_path("tgrunnerctl"), "-s",
                            d.conf["control_socket"]] + list(args),
                           capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        return p.returncode, p.stdout, p.stderr

    def workers(self, d):
        return ctl(d.conf["control_socket"], "workers")["workers"]

    def ready_pids(self, d, n):
        """Wait until the pool has n workers, all ready; their pids."""
        def get():
            ws = self.workers(d)
            ok = len(ws) == n and all(w["state"] == "ready" for w in ws)
            return [w["pid"] for w in ws] if ok else None
        return wait_until(get, 30, what="%d workers ready" % n)

    @staticmethod
    def log_index(d, regex, since=0):
        rx = re.compile(regex)
        with d._cond:
            for i in range(since, len(d.lines)):
                if rx.search(d.lines[i]):
                    return i
        return None

    def assertRestartLog(self, d, old_ids, since):
        """The log of one restart, step by step: each old worker goes only
        after its replacement said hello, and the next replacement starts
        only after it has left."""
        steps = []
        rx = re.compile(r"restart-workers: worker=(\d+) pid=\d+ is up; "
                        r"worker=(\d+) pid=\d+ finishes its (\d+) update")
        with d._cond:
            lines = list(d.lines)
        for i in range(since, len(lines)):
            m = rx.search(lines[i])
            if m:
                steps.append((i, int(m.group(1)), int(m.group(2)),
                              int(m.group(3))))
        self.assertEqual(sorted(s[2] for s in steps), sorted(old_ids),
                         "each old worker replaced once")
        prev_exit = since
        for i, new, old, _ in steps:
            started = self.log_index(d, r"worker=%d pid=\d+: started$" % new,
                                     since)
            hello = self.log_index(d, r"worker=%d pid=\d+: hello " % new,
                                   since)
            left = self.log_index(d, r"worker=%d pid=\d+: exited$" % old,
                                  since)
            self.assertIsNotNone(hello, "worker %d never said hello" % new)
            self.assertIsNotNone(left, "old worker %d never exited" % old)
            self.assertLess(hello, i, "worker %d drained before its "
                            "replacement %d was welcomed" % (old, new))
            self.assertLess(i, left)
            self.assertGreater(started, prev_exit, "replacement %d started "
                               "before the previous old worker left" % new)
            prev_exit = left
        return steps

    # -- the rolling restart under load ---------------------------------------

    def test_restart_workers_under_load(self):
        fake = self.start_fake()
        app = Versioned(self.tmp)
        n = 4
        # more offered than 4 one-slot workers take: every one is always
        # busy, so an old worker always holds an update when it drains
        d = self.daemon(fake, app, workers=n,
                        worker_env={"TG_SLEEP_MS": "4-12"})
        rec = d.records()
        ids = self.generate(fake, 4000, 80, rate=700)
        wait_until(lambda: len(rec.ended()) >= 300, 60,
                   what="300 updates done")
        old_pids = self.ready_pids(d, n)
        self.assertEqual({app.version_of(p) for p in old_pids}, {"1"})
        old_ids = [w["id"] for w in self.workers(d)]
        since = len(d.lines)

        app.set("2")
        rc, out, err = self.ctl(d, "restart-workers")
        self.assertEqual(rc, 0, out + err + d.log_tail())
        done_at = len(rec.ended())
        self.assertLess(done_at, len(ids), "the load ended before the "
                        "restart did: it was not a restart under load")
        # tgrunnerctl followed it from status, step by step
        lines = out.splitlines()
        self.assertEqual(lines[0], "restart-workers: 0/4 replaced", out)
        self.assertIn("restart-workers: 4/4 replaced", lines)
        self.assertEqual(lines[-1], "restart-workers: done", out)
        self.assertEqual(err, "")

        # the new workers run the new version; the old ones are gone
        new_pids = self.ready_pids(d, n)
        self.assertFalse(set(new_pids) & set(old_pids))
        self.assertEqual({app.version_of(p) for p in new_pids}, {"2"})
        self.assertTrue(all(tgtest.pid_gone(p) for p in old_pids))
        st = ctl(d.conf["control_socket"], "status")
        self.assertEqual(st["restart"]["state"], "done")
        self.assertEqual((st["restart"]["replaced"], st["restart"]["total"]),
                         (4, 4))
        self.assertEqual({w["generation"] for w in st["workers"]}, {1})
        rc, out, err = self.ctl(d, "status")
        self.assertRegex(out, r"(?m)^restart:  done \d+s ago: 4/4 replaced$")

        steps = self.assertRestartLog(d, old_ids, since)
        # every old worker held an update when told to drain; it finished
        # there (nothing failed, cancelled or retried below)
        self.assertTrue(all(s[3] >= 1 for s in steps), steps)

        more = self.generate(fake, 600, 80)
        rec = self.finish(fake, d, ids + more, timeout=120)
        rep = rec.check(ids + more, key_of=key_chat)
        sys.stderr.write(rep.summary() + "\n")
        self.assertReport(rep, d)
        self.assertEqual((rep.fails, rep.cancels), (0, 0))
        self.assertEqual(rep.duplicated, {})
        self.assertTrue(all(r.attempt == 1 for r in rec.recs), "an update "
                        "was run again: the restart was not graceful")
        version = {}
        for r in rec.recs:
            if r.pid not in version:
                version[r.pid] = app.version_of(r.pid)
        # updates fetched after the restart all ran on new workers ...
        late = [r for r in rec.recs if r.kind == "S" and r.id in set(more)]
        self.assertEqual({version[r.pid] for r in late}, {"2"})
        # ... and the load during it on both
        during = {version[r.pid] for r in rec.recs if r.id in set(ids)}
        self.assertEqual(during, {"1", "2"})
        self.assertEqual(d.grep(r"^<[0-4]>"), [], "warnings in a clean "
                         "restart")

    # -- a new version that does not start -------------------------------------

    def test_restart_stops_when_new_worker_fails(self):
        fake = self.start_fake()
        app = Versioned(self.tmp)
        d = self.daemon(fake, app, workers=3,
                        worker_env={"TG_SLEEP_MS": "0-3"})
        ids = self.generate(fake, 300, 30)
        rec = d.records()
        rec.wait_ended(ids, 60, daemon=d)
        old = self.ready_pids(d, 3)

        # a broken deploy: the new code exits at start
        app.set("2", "echo 'cannot import bot' >&2; exit 3\n")
        rc, out, err = self.ctl(d, "restart-workers")
        self.assertEqual(rc, 1, out + err)
        self.assertRegex(err, r"^tgrunnerctl: restart-workers: stopped: new "
                         r"worker=\d+ did not come up: worker exited with "
                         r"status 3\n$")
        d.wait_log(r"<3>restart-workers: stopped after 0 of 3: new worker="
                   r"\d+ did not come up: worker exited with status 3; the "
                   r"3 old worker\(s\) keep running")
        d.wait_log(r"worker=\d+ pid=\d+: cannot import bot")
        # the old workers run on, and still work
        self.assertEqual(sorted(self.ready_pids(d, 3)), sorted(old))
        more = self.generate(fake, 200, 30)
        rec.wait_ended(more, 60, daemon=d)
        self.assertEqual({r.pid for r in rec.refresh().recs
                          if r.id in set(more)} - set(old), set())
        rc, out, err = self.ctl(d, "status")
        self.assertRegex(out, r"(?m)^restart:  STOPPED \d+s ago: new worker="
                         r"\d+ did not come up: worker exited with status 3 "
                         r"\(0/3 replaced\)$")
        self.assertRegex(out, r"(?m)^PROBLEM:  workers exit before hello")

        # fixed: the next restart goes through, and the problem is gone
        app.set("3")
        rc, out, err = self.ctl(d, "restart-workers")
        self.assertEqual(rc, 0, out + err)
        new = self.ready_pids(d, 3)
        self.assertEqual({app.version_of(p) for p in new}, {"3"})
        self.assertIsNone(ctl(d.conf["control_socket"],
                                  "status").get("problem"))
        rec = self.finish(fake, d, ids + more)
        self.assertReport(rec.check(ids + more, key_of=key_chat), d)

    # -- again during one; SIGUSR2 ---------------------------------------------

    def test_restart_again_starts_over(self):
        fake = self.start_fake()
        app = Versioned(self.tmp)
        d = self.daemon(fake, app, workers=3,
                        worker_env={"TG_SLEEP_MS": "0-3"})
        ids = self.generate(fake, 2000, 40, rate=300)
        old = self.ready_pids(d, 3)
        # version 2 is slow to start: the restart takes a while
        app.set("2", "sleep 0.4\n")
        follower = subprocess.Popen(
            [tgtest.build_path("tgrunnerctl"), "-s",
             d.conf["control_socket"], "restart-workers"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            stdin=subprocess.DEVNULL)
        self.addCleanup(lambda: follower.poll() is None and follower.kill())
        d.wait_log(r"restart-workers: worker=\d+ pid=\d+ is up; ", 30)
        # a second deploy before the first is through: SIGUSR2 this time
        app.set("3")
        d.kill(signal.SIGUSR2)
        d.wait_log(r"restart-workers \(SIGUSR2\)")
        d.wait_log(r"restart-workers: replacing \d+ worker\(s\) one at a "
                   r"time \(the restart in progress starts over: every "
                   r"worker running now is replaced\)")
        out, err = follower.communicate(timeout=120)
        self.assertEqual(follower.returncode, 0, out + err)
        self.assertIn("restart-workers: another restart-workers started it "
                      "over\n", out)
        self.assertTrue(out.endswith("restart-workers: done\n"), out)
        # every worker now runs version 3: those of version 2 went too
        new = self.ready_pids(d, 3)
        self.assertEqual({app.version_of(p) for p in new}, {"3"})
        st = ctl(d.conf["control_socket"], "status")
        self.assertEqual(st["restart"]["seq"], 2)
        self.assertEqual({w["generation"] for w in st["workers"]}, {2})
        self.assertFalse(set(new) & set(old))
        rec = self.finish(fake, d, ids)
        rep = rec.check(ids, key_of=key_chat)
        self.assertReport(rep, d)
        self.assertTrue(all(r.attempt == 1 for r in rec.recs))

    # -- external workers --------------------------------------------------------

    def test_external_workers_are_skipped(self):
        fake = self.start_fake()
        app = Versioned(self.tmp)
        sock = os.path.join(self.tmp, "workers.sock")
        d = self.daemon(fake, app, workers=2, listen=sock)
        env = {k: v for k, v in os.environ.items()
               if k not in ("TGRUNNER_FD", "TGRUNNER_WORKER_ID")}
        env.update({"TGRUNNER_SOCKET": sock, "TG_RECORD": d.record_path})
        ext = subprocess.Popen([tgtest.worker_path()], env=env,
                               stdin=subprocess.DEVNULL)
        self.addCleanup(lambda: (ext.kill(), ext.wait()))
        d.wait_log(r"external worker connected", 10)
        self.ready_pids(d, 3)
        rc, out, err = self.ctl(d, "restart-workers")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("2/2 replaced; 1 external worker(s) not restarted "
                      "(the daemon did not start them)", out)
        d.wait_log(r"restart-workers: 1 external worker\(s\) are not "
                   r"restarted: the daemon did not start them")
        self.assertIsNone(ext.poll())
        ws = self.workers(d)
        self.assertEqual(sum(1 for w in ws if w["external"]), 1)
        self.assertEqual(ctl(d.conf["control_socket"], "status")
                         ["restart"]["external"], 1)
        ids = self.generate(fake, 100, 10)
        rec = self.finish(fake, d, ids)
        self.assertReport(rec.check(ids, key_of=key_chat), d)

    # -- reload ------------------------------------------------------------------

    def test_reload_tells_the_truth(self):
        fake = self.start_fake()
        app = Versioned(self.tmp)
        d = self.daemon(fake, app, workers=2)
        pids = self.ready_pids(d, 2)

        # refused: file:line on stderr, status 1, nothing applied
        d.conf["workers"] = "lots"
        d._write_conf()
        line = list(d.conf).index("workers") + 2	# after the header
        rc, out, err = self.ctl(d, "reload")
        self.assertEqual((rc, out), (1, ""), err)
        self.assertEqual(err, "tgrunnerctl: reload: %s:%d: workers: expected "
                         "an integer between 0 and 1024, got 'lots'; the "
                         "running configuration is kept\n"
                         % (d.conf_path, line))
        rc, out, err = self.ctl(d, "--json", "reload")
        self.assertEqual(rc, 1)
        ans = json.loads(out)
        self.assertEqual((ans["ok"], ans["file"], ans["line"]),
                         (False, d.conf_path, line))
        self.assertEqual(sorted(self.ready_pids(d, 2)), sorted(pids))

        # a file that cannot be read has no line
        os.rename(d.conf_path, d.conf_path + ".away")
        rc, out, err = self.ctl(d, "reload")
        self.assertEqual(rc, 1)
        self.assertRegex(err, r"^tgrunnerctl: reload: %s: .*; the running "
                         r"configuration is kept\n$" % re.escape(d.conf_path))
        os.rename(d.conf_path + ".away", d.conf_path)

        # good: applied before the answer
        d.conf["workers"] = 3
        d._write_conf()
        rc, out, err = self.ctl(d, "reload")
        self.assertEqual((rc, out, err), (0, "reload: ok (changed: workers)\n",
                                          ""))
        self.ready_pids(d, 3)
        # options that wait for a restart: a warning, still a success
        d.conf["session_key"] = "user"
        d.conf["journal_fsync"] = "always"
        d._write_conf()
        rc, out, err = self.ctl(d, "reload")
        self.assertEqual((rc, out), (0, "reload: ok (changed: none)\n"), err)
        self.assertEqual(err, "tgrunnerctl: reload: warning: journal_fsync, "
                         "session_key changed but take effect only at the "
                         "next start\n")
        rc, out, err = self.ctl(d, "--json", "reload")
        ans = json.loads(out)
        self.assertEqual((rc, ans["ok"], ans["restart_needed"]),
                         (0, True, ["journal_fsync", "session_key"]))
        # a new worker_command says it replaces the workers
        d.conf["worker_command"] = "env TG_X=1 " + app.script
        d._write_conf()
        rc, out, err = self.ctl(d, "reload")
        self.assertEqual(out, "reload: ok (changed: worker_command), "
                         "replacing workers\n")
        # SIGHUP still works, and says the same in the log
        d.conf["workers"] = 2
        d._write_conf()
        since = len(d.lines)
        d.kill(signal.SIGHUP)
        d.wait_log(r"reloaded .*changed=workers workers=2$", since=since)
        self.assertEqual(d.stop(), 0)

    def test_units_reload_through_tgrunnerctl(self):
        for built, sock in (("tgrunnerd.service", "/run/tgrunner/"),
                            ("tgrunnerd@.service", "/run/tgrunner-%i/")):
            with open(tgtest.build_path(os.path.join("systemd", built))) as f:
                unit = f.read()
            lines = re.findall(r"(?m)^ExecReload=(.*)$", unit)
            self.assertEqual(len(lines), 1, built)
            argv = lines[0].split()
            self.assertTrue(argv[0].endswith("/bin/tgrunnerctl"), argv)
            self.assertEqual(argv[1:], ["-s", sock + "control.sock",
                                        "reload"])
            # the socket the unit's runtime directory holds
            self.assertIn("RuntimeDirectory=" + sock.split("/")[2] + "\n",
                          unit)

    # -- the daemon's idempotent answers -----------------------------------------

    def test_idempotent_answers(self):
        fake = self.start_fake()
        app = Versioned(self.tmp)
        d = self.daemon(fake, app, workers=1)
        sock = d.conf["control_socket"]
        self.assertEqual(ctl(sock, "resume"),
                         {"ok": True, "state": "running", "already": True})
        self.assertEqual(ctl(sock, "drain"),
                         {"ok": True, "state": "draining"})
        self.assertEqual(ctl(sock, "drain"),
                         {"ok": True, "state": "draining", "already": True})
        rc, out, err = self.ctl(d, "drain")
        self.assertEqual((rc, out, err), (0, "drain: ok (already draining)\n",
                                          ""))
        self.assertEqual(ctl(sock, "resume"),
                         {"ok": True, "state": "running"})
        # the answer can come before the log line is read: once the
        # resume's line is there, the drains' lines before it are too
        d.wait_log(r"control: resume")
        self.assertEqual(len(d.grep(r"control: drain")), 1)
        # dead-letters retry: an id that is not a dead letter, and not an id
        self.assertEqual(ctl(sock, "dead-letters retry 4242"),
                         {"ok": False, "requeued": 0, "error":
                          "no dead letter with update_id 4242"})
        for bad in ("abc", "12x", "-1", "1 2", "99999999999999999999"):
            with self.subTest(bad):
                self.assertEqual(ctl(sock, "dead-letters retry " + bad),
                                 {"ok": False, "error": "dead-letters retry: "
                                  "'%s' is not an update_id or 'all'" % bad})
        self.assertEqual(ctl(sock, "dead-letters retry"),
                         {"ok": False, "error": "dead-letters retry: give an "
                          "update_id or 'all'"})
        self.assertEqual(ctl(sock, "dead-letters retry all"),
                         {"ok": True, "requeued": 0})
        self.assertFalse(ctl(sock, "dead-letters frob")["ok"])
        rc, out, err = self.ctl(d, "dead-letters", "retry", "4242")
        self.assertEqual((rc, out), (1, ""))
        self.assertEqual(err, "tgrunnerctl: dead-letters retry 4242: no dead "
                         "letter with update_id 4242\n")
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    tgtest.main()
