#!/usr/bin/env python3
"""Workers that die, misbehave, hang, fail or never start: nothing is
lost, per-key order and exclusion hold, the daemon survives and says what
happened."""

import os
import shlex
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402
from tgtest import ScenarioCase, key_chat	# noqa: E402

WORKER_COMM = "tg-test-wor"	# comm is cut at 15 bytes; libtool adds lt-

# What the daemon's log must mention for each kind of misbehaviour, and
# whether it costs the worker its connection (then some update starts
# without ending).  An answer for an id the worker does not hold is
# ignored (PROTOCOL.md section 3.6): the worker goes on with its own.
MISBEHAVE = [
    ("garbage", 0.02, r"(?i)protocol|malformed|invalid|bad frame|parse|json",
     True),
    ("exit", 0.02, r"(?i)exit|died|status 3|terminated", True),
    ("midframe", 0.01, r"(?i)partial|truncat|incomplete|eof|exit|died|closed",
     True),
    ("oversize", 0.01, r"(?i)too (long|large|big)|oversize|exceed|limit|"
                       r"max_frame|frame size", True),
    ("baddone", 0.01, r"done for update=\d+, which is not held by this "
                      r"worker .*; ignored", False),
]


class Workers(ScenarioCase):

    def kill_workers_until_ended(self, d, ids, timeout=120):
        """SIGKILL a random worker every 200 ms until every id has ended;
        returns {pid: time just before its kill}."""
        rec = d.records()
        deaths = {}
        deadline = time.monotonic() + timeout
        while rec.missing(ids) and time.monotonic() < deadline:
            time.sleep(0.2)
            # one that was killed may not be reaped yet: its first kill
            # is its death, a later one would hide it
            pids = [p for p in d.worker_pids(WORKER_COMM) if p not in deaths]
            if not pids:
                continue
            p = self.rng.choice(pids)
            deaths[p] = time.time_ns()
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                del deaths[p]
        return deaths

    def test_sigkill_random_workers(self):
        fake = self.start_fake()
        d = self.start_daemon(fake, workers=4, max_attempts=10,
                              worker_env={"TG_SLEEP_MS": "1-5"})
        ids = self.generate(fake, 3000, 200)
        deaths = self.kill_workers_until_ended(d, ids)
        self.assertTrue(d.running(), d.log_tail())
        rec = self.finish(fake, d, ids)
        sys.stderr.write("killed %d workers\n" % len(deaths))
        self.assertGreaterEqual(len(deaths), 3, "too few kills to mean "
                                "anything (run finished too fast?)")
        rep = rec.check(ids, key_of=key_chat, deaths=deaths)
        sys.stderr.write(rep.summary() + "\n")
        self.assertReport(rep)

    def test_sigkill_between_end_and_done(self):
        # Workers sleep 250 ms between their E line and their done, and
        # are killed there: each such update runs again, however long
        # after its E the kill came, and that is at-least-once, not a
        # duplicate.  What the daemon had a done for must not run again.
        fake = self.start_fake()
        d = self.start_daemon(fake, workers=4, max_attempts=20,
                              worker_env={"TG_SLEEP_MS": "0-1",
                                          "TG_DONE_DELAY_MS": "250"})
        ids = self.generate(fake, 60, 20)
        deaths = self.kill_workers_until_ended(d, ids)
        rec = self.finish(fake, d, ids)
        rep = rec.check(ids, key_of=key_chat, deaths=deaths)
        sys.stderr.write("killed %d workers\n%s\n" % (len(deaths),
                                                      rep.summary()))
        self.assertReport(rep, d)
        # the kills did land between an E and its done
        self.assertGreaterEqual(rep.dups_killed_worker, 3, rep.summary())

    def test_worker_dies_after_done(self):
        # Workers SIGKILL themselves as soon as a done is all in the
        # socket.  The daemon may learn of the death first (SIGCHLD, or a
        # write to the dead worker failing) but a done that reached it is
        # honoured: nothing runs twice, so no death is excused here.
        # (tests/unit/check_pool.c forces each order; this is the whole
        # daemon, which meets them when they happen.)
        fake = self.start_fake()
        d = self.start_daemon(fake, workers=4, max_attempts=20,
                              worker_env={"TG_SLOTS": 2, "TG_SLEEP_MS": "0-2",
                                          "TG_KILL_AFTER_DONE": "0.1"})
        ids = self.generate(fake, 300, 50)
        rec = self.finish(fake, d, ids)
        rep = rec.check(ids, key_of=key_chat)
        self.assertReport(rep, d)
        self.assertEqual(rep.duplicated, {})
        deaths = d.grep(r"exited on signal 9")
        sys.stderr.write("%d workers died after a done\n" % len(deaths))
        self.assertGreaterEqual(len(deaths), 5, d.log_tail())

    def test_misbehaving_workers(self):
        for mode, p, why, fatal in MISBEHAVE:
            with self.subTest(mode=mode):
                fake = self.start_fake()
                d = self.start_daemon(
                    fake, name=mode, workers=4, max_attempts=10,
                    worker_env={"TG_SLEEP_MS": "0-1",
                                "TG_MISBEHAVE": "%s:%s" % (mode, p)})
                ids = self.generate(fake, 1000, 100)
                rec = d.records()
                rec.wait_ended(ids, 90, daemon=d, what=mode)
                self.assertTrue(d.running(), d.log_tail())
                rec = self.finish(fake, d, ids)
                rep = rec.check(ids, key_of=key_chat)
                self.assertReport(rep, d)
                self.assertEqual(rep.duplicated, {})
                # the misbehaviour happened (an S without its E) ...
                if fatal:
                    self.assertGreater(rep.starts, rep.ends,
                                       "%s never triggered" % mode)
                else:
                    self.assertEqual(d.grep(r"protocol error|worker exited"),
                                     [], d.log_tail())
                # ... and the daemon said what it was
                said = d.grep(why)
                self.assertTrue(said, "%s: log does not match /%s/\n%s"
                                % (mode, why, d.log_tail()))
                sys.stderr.write("%s: %d S, %d E; log: %s\n"
                                 % (mode, rep.starts, rep.ends, said[0]))

    def test_hanging_updates_dead_letter(self):
        fake = self.start_fake()
        d = self.start_daemon(fake, workers=4, update_timeout="1s",
                              kill_grace="500ms", max_attempts=2,
                              worker_env={"TG_MISBEHAVE": "hang:1"})
        # chats 1, 2, 3 and chat 1 again: the second one of chat 1 may
        # only start once the first is given up on
        hung = self.inject(fake, [message(c, i) for i, c in
                                  enumerate([1, 2, 3, 1])])
        dl = tgtest.wait_until(lambda: len(d.dead_letters()) >= 4 and
                               d.dead_letters(), 60,
                               what="4 dead letters")
        self.assertEqual(sorted(x["update_id"] for x in dl), hung)
        for x in dl:
            self.assertEqual(x.get("attempts"), 2, x)
            self.assertTrue(isinstance(x.get("reason"), str) and x["reason"],
                            x)
            self.assertEqual(x.get("update", {}).get("update_id"),
                             x["update_id"], x)
        self.assertTrue(d.running())

        # the same state dir with sane workers: the rest goes through and
        # the dead ones are not replayed
        d.restart(worker_env={"TG_SLEEP_MS": "0-1"})
        ids = self.generate(fake, 500, 50)
        rec = self.finish(fake, d, ids)
        rep = rec.check(ids, key_of=key_chat, hold_timeout=0.9)
        self.assertReport(rep, d)
        starts = [r for r in rec.recs if r.kind == "S" and r.id in hung]
        self.assertEqual(sorted((r.id, r.attempt) for r in starts),
                         sorted((i, a) for i in hung for a in (1, 2)))
        self.assertFalse(any(r.kind != "S" for r in rec.recs if r.id in hung))
        self.assertEqual(len(d.dead_letters()), 4)

    def test_failing_handlers_retry(self):
        fake = self.start_fake()
        d = self.start_daemon(fake, workers=4, max_attempts=10,
                              worker_env={"TG_SLEEP_MS": "0-1",
                                          "TG_FAIL": "0.1"})
        ids = self.generate(fake, 1000, 100)
        rec = self.finish(fake, d, ids)
        rep = rec.check(ids, key_of=key_chat)
        self.assertReport(rep, d)
        self.assertEqual(rep.duplicated, {})
        self.assertGreater(rep.fails, 20)
        self.assertEqual(d.dead_letters(), [])
        # every failure was followed by a retry with a higher attempt
        retried = {r.id for r in rec.recs if r.kind == "S" and r.attempt > 1}
        self.assertEqual({r.id for r in rec.recs if r.kind == "F"}, retried)

    def test_worker_that_cannot_start(self):
        fake = self.start_fake()
        spawns = os.path.join(self.tmp, "spawns")
        cmd = "echo x >> %s; exec /bin/false" % shlex.quote(spawns)
        d = self.start_daemon(fake, workers=2, wait=False,
                              worker_command=cmd)
        window = 5.0
        time.sleep(window)	# measuring a rate over a fixed window
        n = count_lines(spawns)
        sys.stderr.write("%d spawns in %.0fs\n" % (n, window))
        self.assertGreaterEqual(n, 1, "the worker was never started")
        self.assertLessEqual(n, 30, "fork loop: %d spawns in %.0fs\n%s"
                             % (n, window, d.log_tail()))
        self.assertTrue(d.grep(r"(?i)fail\w* (at|on|to) start|exit\w* "
                               r"(immediately|at once|too (fast|quickly|"
                               r"soon))|respawn|giving up|give up|disabl|"
                               r"back.?off|crash.?loop|too many|status 1"),
                        "the log does not say why workers are not running\n"
                        + d.log_tail())
        if d.running():
            self.assertEqual(d.stop(), 0)
        else:
            self.assertGreaterEqual(d.proc.returncode, 0,
                                    "daemon died by a signal")
            d.check_leftovers()
        self.assertNoLeftovers(d)


def message(chat, i):
    return {"message": {"message_id": i + 1, "date": 1700000000 + i,
                        "chat": {"id": chat, "type": "private"},
                        "from": {"id": chat, "is_bot": False,
                                 "first_name": "u"},
                        "text": "hang %d" % i}}


def count_lines(path):
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


if __name__ == "__main__":
    tgtest.main()
