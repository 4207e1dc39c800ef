#!/usr/bin/env python3
"""The outbox: replies attached to done are owed like updates.  Hundreds
of replies wait in flood control (defaults on) when the daemon is SIGKILLed,
or stopped with SIGTERM past shutdown_timeout; after a restart on the same
state_dir every reply reaches the fake Bot API, per-chat order holds, and
only calls that were in flight at a kill go twice (at most
api_max_inflight of them).  status and /metrics show what is owed.

The test worker replies "echo: seq N" to each update (TG_REPLY=1), so a
reply names its update: (chat_id, seq) is unique."""

import collections
import os
import signal
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import promparse				# noqa: E402
import tgtest					# noqa: E402
from tgtest import ScenarioCase, ctl, replies, wait_until	# noqa: E402

CHATS = 100
COUNT = 400
INFLIGHT = 8


class Outbox(ScenarioCase):

    def daemon(self, fake, **kw):
        kw.setdefault("flood_control", True)	# tgtest's default is off
        kw.setdefault("workers", 4)
        kw.setdefault("api_max_inflight", INFLIGHT)
        kw.setdefault("worker_env", {"TG_REPLY": "1"})
        kw.setdefault("control_socket", os.path.join(self.tmp, "ctl.sock"))
        return self.start_daemon(fake, **kw)

    def status(self, d):
        return ctl(d.conf["control_socket"], "status")

    def queue_replies(self, fake, d):
        """COUNT updates in CHATS private chats; once every handler has
        finished and its done mark is written, with hundreds of replies
        still owed behind flood control, returns their ids and the
        (chat, seq) of every reply they owe."""
        ids = self.generate(fake, COUNT, CHATS)
        rec = d.records()
        rec.wait_ended(ids, 60, daemon=d)
        self.want = {(r.chat, r.seq) for r in rec.refresh().recs
                     if r.kind == "E"}
        self.assertEqual(len(self.want), COUNT)
        st = wait_until(lambda: (lambda s: s["journal"]["pending"] == 0
                                 and s)(self.status(d)), 20,
                        what="every done mark written")
        owed = st["outbox"]["owed"]
        sys.stderr.write("all %d handlers done; %d replies owed, %d sent\n"
                         % (COUNT, owed, len(replies(fake))))
        self.assertGreater(owed, COUNT // 2, "the replies were not held "
                           "back: the test tests nothing")
        self.assertGreater(st["outbox"]["oldest_age"], -1)
        return ids

    def check_replies(self, fake, max_dups):
        """Every reply arrived; returns the number of duplicates."""
        want = self.want

        def arrived():
            got = {(c, s) for _, c, s, fault in replies(fake)
                   if fault is None}
            return got >= want and got

        wait_until(arrived, 60, what="all %d replies" % COUNT)
        calls = [(c, s) for _, c, s, fault in replies(fake) if fault is None]
        count = collections.Counter(calls)
        self.assertEqual(set(count), want, "replies to nothing we sent")
        dups = {k: n for k, n in count.items() if n > 1}
        sys.stderr.write("%d replies, %d distinct, %d sent twice: %s\n"
                         % (len(calls), len(count), len(dups),
                            sorted(dups)[:10]))
        self.assertTrue(all(n <= 2 for n in dups.values()),
                        "a reply went out more than twice: %r" % dups)
        self.assertLessEqual(len(dups), max_dups)
        # per chat: the replies in the order of their updates (a repeat
        # is the same reply again, right after itself)
        by_chat = collections.defaultdict(list)
        for c, s in calls:
            by_chat[c].append(s)
        for c, seqs in by_chat.items():
            self.assertEqual(seqs, sorted(seqs), "chat %d: replies out of "
                             "order: %r" % (c, seqs))
        return len(dups)

    def test_sigkill_with_replies_queued(self):
        fake = self.start_fake()
        port = tgtest.free_port()
        d = self.daemon(fake, metrics_listen="127.0.0.1:%d" % port)
        ids = self.queue_replies(fake, d)
        # Telegram sends the messages but its answers are late: the kill
        # comes with api_max_inflight calls done and not answered
        fake.fault("late", method="sendMessage", count=-1, delay_ms=10000)
        wait_until(lambda: self.status(d)["api"]["inflight"] == INFLIGHT, 20,
                   what="%d calls in flight" % INFLIGHT)
        time.sleep(0.2)		# their requests reach the fake
        sent_before = len(replies(fake))
        d.crash()
        fake.clear_faults()
        d.start()
        d.wait_ready()
        m = d.wait_log(r"replaying (\d+) call\(s\) owed from the journal")
        replayed = int(m.group(1))
        # owed at the kill: all but those recorded as answered, and at
        # most api_max_inflight answered that were not recorded yet
        self.assertLessEqual(COUNT - sent_before, replayed)
        self.assertLessEqual(replayed, COUNT - sent_before + INFLIGHT)
        st = self.status(d)
        self.assertEqual(st["outbox"]["replayed"], replayed)
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
                                    timeout=10) as r:
            fams = promparse.parse(r.read().decode())
        self.assertEqual(promparse.value(fams,
                                         "tgrunner_outbox_replayed_total"),
                         replayed)
        self.assertGreater(promparse.value(fams, "tgrunner_outbox_owed"), 0)
        dups = self.check_replies(fake, INFLIGHT)
        self.assertGreater(dups, 0, "no call was in flight at the kill")
        # the updates themselves ran once: their done marks were written
        rec = self.finish(fake, d, ids)
        self.assertEqual(len(rec.recs), 2 * COUNT, "an update ran again")
        wait_until(lambda: self.status(d)["outbox"]["owed"] == 0
                   if d.running() else True, 10, what="nothing owed")

    def test_sigterm_past_shutdown_timeout(self):
        fake = self.start_fake()
        d = self.daemon(fake, shutdown_timeout="1s", kill_grace="1s")
        self.queue_replies(fake, d)
        t0 = time.monotonic()
        d.kill(signal.SIGTERM)
        rc = d.wait_exit(30)
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, d.log_tail())
        self.assertLess(took, 10, "SIGTERM took %.1fs" % took)
        m = d.wait_log(r"stopped: .*; (\d+) replies owed, kept in the "
                       r"journal")
        owed = int(m.group(1))
        self.assertGreater(owed, 0, d.log_tail())
        self.assertEqual(d.grep(r"still in flight"), [])
        d.start()
        d.wait_ready()
        m = d.wait_log(r"replaying (\d+) call\(s\) owed")
        self.assertEqual(int(m.group(1)), owed)
        # a stop waits for the calls in flight: none goes twice
        self.check_replies(fake, 0)
        self.assertEqual(d.stop(), 0)
        self.assertRegex(d.grep(r"stopped: ")[-1], r"; 0 replies owed")

    def test_drain_keeps_sending(self):
        """drain stops fetching; the owed replies still go out."""
        fake = self.start_fake()
        d = self.daemon(fake)
        self.queue_replies(fake, d)
        self.assertTrue(ctl(d.conf["control_socket"], "drain")["ok"])
        self.check_replies(fake, 0)
        wait_until(lambda: self.status(d)["outbox"]["owed"] == 0, 20,
                   what="nothing owed")

    def test_fsync_off_says_so(self):
        """journal_fsync = off: the outbox lives in memory; the warning at
        start says a kill loses it."""
        fake = self.start_fake()
        d = self.daemon(fake, journal_fsync="off")
        self.assertTrue(d.grep(r"journal_fsync = off: .*replies"),
                        d.log_tail())


if __name__ == "__main__":
    tgtest.main()
