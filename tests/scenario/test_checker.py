#!/usr/bin/env python3
"""The harness itself: Records.check() on hand-made record files (proving
the checker can fail), and Daemon's process handling against a stub
daemon script.  Needs nothing from the build."""

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402
from tgtest import Records, key_chat		# noqa: E402

SEC = 1000000000


class RecordFile:
    """Builds a record file line by line; times advance 1 ms per line."""

    def __init__(self, path):
        self.path = path
        self.lines = []
        self.t = 1700000000 * SEC

    def add(self, kind, uid, attempt=1, pid=100, keys=None, chat=None,
            seq=None, dt=0.001):
        self.t += int(dt * SEC)
        if chat is None:
            chat = uid % 3
        if keys is None:
            keys = "chat:%d" % chat
        self.lines.append("%s %d %d %d %s %s %s %d\n" % (
            kind, uid, attempt, pid, keys or "-", chat,
            "-" if seq is None else seq, self.t))
        return self

    def run(self, uid, **kw):
        self.add("S", uid, **kw)
        return self.add("E", uid, **kw)

    def write(self):
        with open(self.path, "w") as f:
            f.writelines(self.lines)
        return Records(self.path)


class CheckerTest(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="tgchk-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.rf = RecordFile(os.path.join(self.tmp, "rec"))

    def check(self, injected, **kw):
        return self.rf.write().check(injected, **kw)

    def test_good_interleaved(self):
        # chat 1: 1,4,7  chat 2: 2,5  chat 0: 3,6 ; concurrency across keys
        rf = self.rf
        rf.add("S", 1).add("S", 2).add("S", 3).add("E", 2).add("E", 1)
        rf.add("S", 4).add("S", 5).add("E", 3).add("E", 4).add("E", 5)
        rf.run(6).run(7)
        rep = self.check(range(1, 8))
        self.assertTrue(rep.ok, rep.summary())
        self.assertEqual(rep.ends, 7)
        self.assertEqual(rep.starts, 7)

    def test_lost(self):
        self.rf.run(1).run(2).add("S", 3)
        rep = self.check([1, 2, 3, 4])
        self.assertFalse(rep.ok)
        self.assertEqual(rep.lost, [3, 4])
        self.assertIn("lost: 2", rep.summary())

    def test_duplicate(self):
        self.rf.run(1).run(2).run(1, attempt=2)
        rep = self.check([1, 2])
        self.assertFalse(rep.ok)
        self.assertEqual(rep.duplicated, {1: 2})
        self.assertEqual(rep.unexplained_dups, [1])
        # started again after it ended: also an order violation
        self.assertTrue(rep.order)

    def test_order(self):
        self.rf.run(11, chat=5).run(10, chat=5)
        rep = self.check([10, 11])
        self.assertFalse(rep.ok)
        self.assertEqual(len(rep.order), 1)
        self.assertIn("id 10 after id 11", rep.order[0])

    def test_order_other_keys_free(self):
        self.rf.run(11, chat=5).run(10, chat=6)
        self.assertTrue(self.check([10, 11]).ok)

    def test_overlap(self):
        rf = self.rf
        rf.add("S", 10, chat=5).add("S", 11, chat=5, pid=101)
        rf.add("E", 10, chat=5).add("E", 11, chat=5, pid=101)
        rep = self.check([10, 11])
        self.assertFalse(rep.ok)
        self.assertEqual(len(rep.overlap), 1)
        self.assertEqual(rep.order, [])

    def test_overlap_multikey(self):
        # different chats, same user: the user key must serialise them
        rf = self.rf
        rf.add("S", 1, chat=1, keys="chat:1,user:7")
        rf.add("S", 2, chat=2, keys="chat:2,user:7", pid=101)
        rf.add("E", 1, chat=1, keys="chat:1,user:7")
        rf.add("E", 2, chat=2, keys="chat:2,user:7", pid=101)
        self.assertEqual(len(self.check([1, 2]).overlap), 1)
        # judged by chat only: no conflict
        self.assertTrue(self.rf.write().check([1, 2], key_of=key_chat).ok)
        # an independent key function overrides what was recorded
        users = {1: 7, 2: 7}
        rep = self.rf.write().check(
            [1, 2], key_of=lambda r: ("u%d" % users[r.id],))
        self.assertEqual(len(rep.overlap), 1)

    def test_keyless(self):
        rf = self.rf
        rf.add("S", 1, keys="-").add("S", 2, keys="-", pid=101)
        rf.add("E", 2, keys="-", pid=101).add("E", 1, keys="-")
        self.assertTrue(self.check([1, 2]).ok)

    def test_retry_after_worker_death(self):
        rf = self.rf
        rf.add("S", 10, chat=5, pid=100)		# worker dies here
        rf.add("S", 10, chat=5, attempt=2, pid=101)
        rf.add("E", 10, chat=5, attempt=2, pid=101)
        rf.run(11, chat=5, pid=101)
        rep = self.check([10, 11])
        self.assertTrue(rep.ok, rep.summary())

    def test_retry_attempt_must_grow(self):
        rf = self.rf
        rf.add("S", 10, pid=100).add("S", 10, attempt=1, pid=101)
        rf.add("E", 10, pid=101)
        rep = self.check([10])
        self.assertFalse(rep.ok)
        self.assertEqual(len(rep.attempts), 1)

    def test_retry_after_fail(self):
        rf = self.rf
        rf.add("S", 10).add("F", 10).add("S", 10, attempt=2)
        rf.add("E", 10, attempt=2)
        rep = self.check([10])
        self.assertTrue(rep.ok, rep.summary())
        self.assertEqual(rep.fails, 1)

    def test_dead_worker_needs_evidence(self):
        # 10 never ends (its worker was killed), 11 of the same key runs
        rf = self.rf
        rf.add("S", 10, chat=5, pid=100)
        rf.run(11, chat=5, pid=101)
        rep = self.check([11])
        self.assertEqual(len(rep.overlap), 1, rep.summary())
        death = {100: rf.t - SEC // 2}			# died before 11 started
        r = Records(rf.path).check([11], deaths=death)
        self.assertTrue(r.ok, r.summary())
        late = {100: rf.t + SEC}			# died after: still overlap
        self.assertEqual(len(Records(rf.path).check([11], deaths=late)
                             .overlap), 1)

    def killed_after_end_file(self, after_e=(), gap=0.05, later=()):
        """Worker 100 (one slot) ends 10 and is killed; 10 runs again on
        101 gap s after the E.  after_e: ids worker 100 runs after its E
        (before the re-run); later: ids it runs after the re-run.  Returns
        the time of the E."""
        rf = self.rf
        rf.lines = []
        rf.add("S", 10, chat=5, pid=100).add("E", 10, chat=5, pid=100)
        t_e = rf.t
        for i in after_e:
            rf.run(i, chat=7, pid=100)
        rf.add("S", 10, chat=5, attempt=2, pid=101, dt=gap)
        rf.add("E", 10, chat=5, attempt=2, pid=101)
        rf.run(11, chat=5, pid=101)
        for i in later:
            rf.run(i, chat=7, pid=100)
        return t_e

    def test_worker_killed_after_end(self):
        ids = [10, 11]
        t_e = self.killed_after_end_file()
        rep = self.check(ids)			# nobody was killed: a dup
        self.assertEqual((len(rep.order), rep.unexplained_dups), (1, [10]))
        ok = self.check(ids, deaths={100: t_e + SEC // 100})
        self.assertTrue(ok.ok, ok.summary())
        self.assertEqual(ok.dups_killed_worker, 1)
        # the death time is taken before the kill: E may come after it
        early = self.check(ids, deaths={100: t_e - SEC // 1000})
        self.assertTrue(early.ok, early.summary())
        # another worker died: no excuse for this one
        other = self.check(ids, deaths={102: t_e + SEC // 100})
        self.assertEqual(other.unexplained_dups, [10])

    def test_worker_killed_long_after_end(self):
        # E, then the worker is descheduled for 3 s before its done and
        # killed there: at-least-once, however long the delay was
        t_e = self.killed_after_end_file(gap=3.5)
        rep = self.check([10, 11], deaths={100: t_e + 3 * SEC})
        self.assertTrue(rep.ok, rep.summary())
        self.assertEqual(rep.dups_killed_worker, 1)

    def test_worker_killed_after_end_daemon_dups(self):
        # the daemon's own duplicates stay duplicates, kill or not:
        # ... the worker went on to other work: its done was surely sent
        t_e = self.killed_after_end_file(after_e=(12,))
        busy = self.check([10, 11, 12], deaths={100: t_e + SEC // 100})
        self.assertEqual(busy.unexplained_dups, [10])
        self.assertEqual(len(busy.order), 1)
        # ... even if that other work is written after the re-run
        t_e = self.killed_after_end_file(later=(12,))
        later = self.check([10, 11, 12], deaths={100: t_e + SEC // 100})
        self.assertEqual(later.unexplained_dups, [10])
        # ... the re-run started before the kill: the daemon did not wait
        # for the worker's death (nor for its done)
        t_e = self.killed_after_end_file(gap=0.05)
        early = self.check([10, 11], deaths={100: t_e + SEC // 10})
        self.assertEqual(early.unexplained_dups, [10])
        self.assertEqual(len(early.order), 1)

    def test_hold_timeout(self):
        rf = self.rf
        rf.add("S", 10, chat=5, pid=100)		# hangs
        rf.add("S", 11, chat=5, pid=101, dt=0.5)
        rf.add("E", 11, chat=5, pid=101)
        # too early: the daemon cannot have given up after 0.5 s of 1 s
        self.assertEqual(len(self.check([11], hold_timeout=1.0).overlap), 1)
        rf.lines = []
        rf.add("S", 10, chat=5, pid=100)
        rf.add("S", 11, chat=5, pid=101, dt=1.2)
        rf.add("E", 11, chat=5, pid=101)
        rep = self.check([11], hold_timeout=1.0)
        self.assertTrue(rep.ok, rep.summary())

    def test_unmatched_end(self):
        self.rf.add("E", 3)
        rep = self.check([3])
        self.assertFalse(rep.ok)
        self.assertEqual(len(rep.unmatched), 1)

    def test_unexpected(self):
        self.rf.run(1).run(99)
        rep = self.check([1])
        self.assertFalse(rep.ok)
        self.assertEqual(rep.unexpected, [99])

    def test_bad_line(self):
        rf = self.rf
        rf.run(1)
        rf.lines.append("S 2 1 100 chat:2 2\n")		# truncated
        rf.lines.append("X 2 1 100 chat:2 2 - 5\n")		# bad kind
        rep = self.check([1])
        self.assertFalse(rep.ok)
        self.assertEqual(len(rep.bad_lines), 2)

    # -- crash epochs -------------------------------------------------------

    def crash_file(self, e10_age):
        """10 and 11 of chat 5 (and 12 of chat 6); 10 ends e10_age s before
        the kill, 11 is open at the kill; both run again after it."""
        rf = self.rf
        rf.run(12, chat=6)
        rf.add("S", 10, chat=5).add("E", 10, chat=5)
        rf.add("S", 11, chat=5, dt=e10_age)
        kill = (len(rf.lines), rf.t + 1000)
        rf.add("S", 10, chat=5, attempt=2, pid=200)	# replay, older id
        rf.add("E", 10, chat=5, attempt=2, pid=200)
        rf.add("S", 11, chat=5, attempt=2, pid=200)
        rf.add("E", 11, chat=5, attempt=2, pid=200)
        return kill

    def test_crash_dups_explained(self):
        kill = self.crash_file(0.01)
        rep = self.check([10, 11, 12], kills=[kill],
                         check_replay_attempts=True)
        self.assertTrue(rep.ok, rep.summary())
        self.assertEqual(rep.duplicated, {10: 2})
        self.assertEqual((rep.dups_open, rep.dups_recent), (0, 1))
        # without the kill point the same file is badly wrong
        rep = Records(self.rf.path).check([10, 11, 12])
        self.assertFalse(rep.ok)
        self.assertTrue(rep.order and rep.unexplained_dups)

    def test_crash_dup_unexplained(self):
        kill = self.crash_file(5.0)		# 10 ended long before the kill
        rep = self.check([10, 11, 12], kills=[kill], dup_grace=1.0)
        self.assertFalse(rep.ok)
        self.assertEqual(rep.unexplained_dups, [10])

    def test_crash_replay_attempt(self):
        rf = self.rf
        rf.add("S", 10)
        kill = (len(rf.lines), rf.t + 1000)
        rf.run(10, attempt=1, pid=200)
        self.assertTrue(self.check([10], kills=[kill]).ok)
        rep = self.check([10], kills=[kill], check_replay_attempts=True)
        self.assertFalse(rep.ok)
        self.assertEqual(len(rep.attempts), 1)

    def test_crash_overlap_inside_epoch(self):
        rf = self.rf
        rf.add("S", 10, chat=5)
        kill = (len(rf.lines), rf.t + 1000)
        rf.add("S", 10, chat=5, attempt=2, pid=200)
        rf.add("S", 11, chat=5, pid=201)		# while 10 runs
        rf.add("E", 10, chat=5, attempt=2, pid=200)
        rf.add("E", 11, chat=5, pid=201)
        rep = self.check([10, 11], kills=[kill])
        self.assertEqual(len(rep.overlap), 1, rep.summary())

    # -- reading and measuring ------------------------------------------------

    def test_incremental_partial_line(self):
        path = self.rf.path
        with open(path, "w") as f:
            f.write("S 1 1 100 chat:1 1 1 1000\nE 1 1 100 ch")
        r = Records(path)
        self.assertEqual(r.nlines, 1)
        self.assertEqual(r.missing([1]), [1])
        with open(path, "a") as f:
            f.write("at:1 1 1 2000\n")
        self.assertEqual(r.line_count(), 2)
        self.assertEqual(r.missing([1]), [])
        self.assertEqual(r.bad, [])
        r.wait_ended([1], timeout=1)
        with self.assertRaises(AssertionError):
            r.wait_ended([1, 2], timeout=0.2)

    def test_missing_file(self):
        r = Records(os.path.join(self.tmp, "nope"))
        self.assertEqual(r.nlines, 0)
        self.assertFalse(r.check([1]).ok)

    def test_latency_and_by_chat(self):
        rf = self.rf
        rf.add("S", 1, chat=1, dt=0).add("E", 1, chat=1, dt=0.010)
        rf.add("S", 2, chat=2, dt=0).add("E", 2, chat=2, dt=0.020)
        r = rf.write()
        t0 = 1700000000.0
        lat = r.latency([[1, t0], [2, t0], [3, t0]])
        self.assertEqual(lat["n"], 2)
        self.assertAlmostEqual(lat["max"], 30.0, delta=0.5)
        bc = r.by_chat()
        self.assertAlmostEqual(bc[2]["work_ns"] / 1e6, 20.0, delta=0.5)
        self.assertEqual(bc[1]["n"], 1)


STUB = r'''#!/usr/bin/env python3
# Stand-in for tgrunnerd: logs like it, forks a "worker", honours SIGTERM.
import os, signal, subprocess, sys, time
conf = sys.argv[2]
sys.stderr.write("<6>tgrunnerd: config %s\n" % conf)
kid = subprocess.Popen(["sleep", "300"])
def term(sig, frm):
    if not os.environ.get("STUB_LEAK"):
        kid.terminate(); kid.wait()
    sys.stderr.write("<5>tgrunnerd: stopping\n"); sys.stderr.flush()
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
time.sleep(0.2)
sys.stderr.write("<5>tgrunnerd: ready bot=@fake_bot workers=2\n")
sys.stderr.write("<6>tgrunnerd: env TG_RECORD=%s\n" % os.environ.get("TG_RECORD"))
sys.stderr.flush()
while True:
    time.sleep(1)
'''


class FakeFake:
    url = "http://127.0.0.1:9"
    token = "999:SECRET"


class DaemonTest(unittest.TestCase):
    """Daemon start/ready/stop/restart/crash against a stub script."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="tgchk-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        bd = os.path.join(self.tmp, "build")
        os.makedirs(bd)
        stub = os.path.join(bd, "tgrunnerd")
        with open(stub, "w") as f:
            f.write(STUB)
        os.chmod(stub, 0o755)
        old = tgtest.BUILDDIR
        tgtest.BUILDDIR = bd
        self.addCleanup(setattr, tgtest, "BUILDDIR", old)
        os.makedirs(os.path.join(self.tmp, "d"))
        self.d = tgtest.Daemon(FakeFake(), os.path.join(self.tmp, "d"),
                               workers=3, worker_env={"TG_SLEEP_MS": "1-2"},
                               session_key="chat, user", journal_fsync=None,
                               delete_webhook=True)
        self.addCleanup(self.d.close)

    def test_files(self):
        d = self.d
        st = os.stat(d.token_path)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        with open(d.token_path) as f:
            self.assertEqual(f.read(), "999:SECRET\n")
        with open(d.conf_path) as f:
            conf = f.read()
        self.assertIn("api_url = http://127.0.0.1:9\n", conf)
        self.assertIn("workers = 3\n", conf)
        self.assertIn("session_key = chat, user\n", conf)
        self.assertIn("delete_webhook = yes\n", conf)
        self.assertNotIn("journal_fsync", conf)
        self.assertNotIn("SECRET", conf)

    def test_life_cycle(self):
        d = self.d
        d.wait_ready(10)
        self.assertTrue(d.running())
        m = d.wait_log(r"TG_RECORD=(\S+)")
        self.assertEqual(m.group(1), d.record_path)
        kids = d.worker_pids()
        self.assertEqual(len(kids), 1)
        self.assertEqual(d.worker_pids(comm="sleep"), kids)
        with self.assertRaises(AssertionError):
            d.wait_log(r"never printed", timeout=0.3)
        self.assertEqual(d.stop(), 0)
        self.assertTrue(tgtest.pid_gone(kids[0]))
        d.restart()
        self.assertEqual(len(d.grep(r"ready bot=")), 2)
        self.assertEqual(d.runs, 2)
        kids = d.worker_pids()
        t = d.crash()
        self.assertLessEqual(t, time.time_ns())
        self.assertFalse(d.running())
        self.assertEqual(d.proc.returncode, -signal.SIGKILL)
        self.assertTrue(all(tgtest.pid_gone(p) for p in kids))
        with open(d.log_path) as f:
            text = f.read()
        self.assertIn("crashed", text)
        self.assertEqual(text.count("ready bot="), 2)
        self.assertIn("stopping", d.log_text())
        self.assertEqual(d.sanitizer_reports(), [])
        d.lines.append("worker=1 pid=5: x.c:3:5: runtime error: signed "
                       "integer overflow")
        self.assertEqual(len(d.sanitizer_reports()), 1)

    def test_leftovers(self):
        d = self.d
        d.wait_ready(10)
        self.assertEqual(d.stop(), 0)
        self.assertEqual(d.leftovers, [])
        d.restart(worker_env={"STUB_LEAK": "1"})
        kid = d.worker_pids()[0]
        self.assertEqual(d.stop(), 0)
        self.assertEqual(len(d.leftovers), 1, d.leftovers)
        self.assertIn("sleep", d.leftovers[0])
        tgtest.wait_until(lambda: tgtest.pid_gone(kid), 5)

    def test_exit_detected(self):
        d = self.d
        d.wait_ready(10)
        d.kill(signal.SIGKILL)
        with self.assertRaisesRegex(AssertionError, "daemon exited"):
            d.wait_log(r"never printed", timeout=10)


def wait_until_selftest():
    t0 = time.monotonic()
    try:
        tgtest.wait_until(lambda: False, timeout=0.1, what="nothing")
    except AssertionError as e:
        assert "nothing" in str(e)
        return time.monotonic() - t0 < 5
    return False


class MiscTest(unittest.TestCase):
    def test_wait_until(self):
        self.assertTrue(wait_until_selftest())
        self.assertEqual(tgtest.wait_until(lambda: 5, timeout=1), 5)

    def test_descendants(self):
        p = subprocess.Popen(["sh", "-c", "sleep 30 & wait"])
        self.addCleanup(p.wait)
        self.addCleanup(p.kill)
        kids = tgtest.wait_until(lambda: tgtest.descendants(p.pid), 5)
        self.assertTrue(kids)
        for k in kids:
            os.kill(k, signal.SIGKILL)


if __name__ == "__main__":
    tgtest.main()
