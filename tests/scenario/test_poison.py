#!/usr/bin/env python3
"""Poison updates end, and end once.  A 2 MiB update (too large for a
worker frame) and a 20 MiB one (too large for a journal record), among
normal updates: both become dead letters at once, with their reason, no
worker is touched or restarted, Telegram is told they were taken (no
refetch loop), and the other chats are answered within seconds.  And a dead
letter that cannot be written (a read-only file) keeps its update pending
in the journal, across a kill too, until the write succeeds: it is never
marked done first."""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402
from tgtest import ScenarioCase, ctl, wait_until	# noqa: E402

MIB = 1024 * 1024


def message(chat, text, mid=1):
    return {"message": {"message_id": mid, "date": 1700000000,
                        "chat": {"id": chat, "type": "private"},
                        "from": {"id": chat, "is_bot": False,
                                 "first_name": "u"},
                        "text": text}}


class ReadOnly:
    """A file made read-only: a read-only bind mount of it over itself
    (root), else a directory in its place (any write fails, as for root a
    mode does not).  restore() makes it writable again."""

    def __init__(self, path):
        self.path = path
        self.mounted = False
        open(path, "a").close()
        if os.geteuid() == 0 and subprocess.run(
                ["mount", "--bind", path, path],
                stderr=subprocess.DEVNULL).returncode == 0:
            if subprocess.run(["mount", "-o", "remount,bind,ro", path],
                              stderr=subprocess.DEVNULL).returncode == 0:
                self.mounted = True
                self.errno_text = "Read-only file system"
                return
            subprocess.run(["umount", path])
        os.unlink(path)
        os.mkdir(path)
        self.errno_text = "Is a directory"

    def restore(self):
        if self.mounted:
            subprocess.run(["umount", self.path], check=True)
            self.mounted = False
        elif os.path.isdir(self.path):
            os.rmdir(self.path)


class Poison(ScenarioCase):

    def test_huge_updates_end_at_once(self):
        fake = self.start_fake()
        sock = os.path.join(self.tmp, "c.sock")
        d = self.start_daemon(fake, workers=2, control_socket=sock,
                              worker_env={"TG_SLEEP_MS": "0-2"})
        before = self.generate(fake, 100, 20)
        big = self.inject(fake, [message(7, "x" * (2 * MIB))])[0]
        middle = self.generate(fake, 100, 20)
        huge = self.inject(fake, [message(8, "y" * (20 * MIB))])[0]
        t0 = time.monotonic()
        after = self.generate(fake, 100, 20)
        normal = before + middle + after
        rec = d.records()
        rec.wait_ended(normal, 60, daemon=d)
        took = time.monotonic() - t0
        sys.stderr.write("the other 300 ended %.2fs after the 20 MiB one "
                         "was injected\n" % took)
        self.assertLess(took, 15)
        wait_until(lambda: len(d.dead_letters()) == 2, 20,
                   what="two dead letters")
        letters = {x["update_id"]: x for x in d.dead_letters()}
        self.assertEqual(set(letters), {big, huge})
        self.assertIn("too large for a worker", letters[big]["reason"])
        self.assertIn("too large for the journal", letters[huge]["reason"])
        self.assertEqual(len(letters[huge]["update"]["message"]["text"]),
                         20 * MIB)
        # no worker ever saw them: none was started for them, none died
        self.assertNotIn(big, rec.ended() | {r.id for r in rec.recs})
        st = ctl(sock, "status")
        self.assertEqual(st["pool"]["spawned"], 2)
        self.assertEqual(st["pool"]["protocol_errors"], 0)
        self.assertEqual(st["updates"]["dead"], 2)
        self.assertEqual(st["journal"]["pending"], 0)
        # taken: confirmed, never fetched again
        self.wait_confirmed(fake, max(normal + [big, huge]))
        polls = fake.stats()["polls"]
        wait_until(lambda: fake.stats()["polls"] > polls + 2, 20,
                   what="more polls")
        self.assertEqual(len(d.dead_letters()), 2)
        self.assertEqual(d.grep(r"update=%d: giving up" % huge)[1:], [])
        rec = self.finish(fake, d, normal)
        self.assertReport(rec.check(normal, key_of=tgtest.key_chat), d)
        # and a restart does not bring them back
        d.restart()
        time.sleep(1)
        self.assertEqual(len(d.dead_letters()), 2)
        self.assertEqual(d.stop(), 0)

    def test_dead_letter_on_read_only_file(self):
        fake = self.start_fake()
        sock = os.path.join(self.tmp, "c.sock")
        d = self.start_daemon(fake, workers=1, max_attempts=1,
                              control_socket=sock,
                              worker_env={"TG_FAIL": "1"})
        path = os.path.join(d.state_dir, "dead-letters.jsonl")
        ro = ReadOnly(path)
        self.addCleanup(ro.restore)
        ids = self.generate(fake, 1, 1)
        d.wait_log(r"update=%d: cannot write its dead letter .*: %s"
                   % (ids[0], ro.errno_text))
        d.wait_log(r"dead letters: 1 waiting; trying again")
        st = ctl(sock, "status")
        self.assertEqual(st["journal"]["pending"], 1, "marked done before "
                         "its dead letter was written")
        self.assertEqual(d.grep(r"written to dead-letters"), [])
        # killed meanwhile: the journal still has it, the next run retries
        d.crash()
        d.start()
        d.wait_ready()
        d.wait_log(r"replaying 1 unfinished update")
        d.wait_log(r"update=%d: cannot write its dead letter" % ids[0])
        self.assertEqual(ctl(sock, "status")["journal"]["pending"], 1)
        # writable again: written once, done, and not run again
        ro.restore()
        d.wait_log(r"update=%d attempts=\d+: dead letter written to "
                   r"dead-letters.jsonl after \d+ failed write" % ids[0], 30)
        wait_until(lambda: ctl(sock, "status")["journal"]["pending"] == 0,
                   10, what="the update done")
        self.assertEqual([x["update_id"] for x in d.dead_letters()], ids)
        self.assertEqual(d.stop(), 0)
        d.start()
        d.wait_ready()
        self.assertEqual(d.grep(r"replaying \d+ unfinished", since=d.run_start),
                         [])
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    tgtest.main()
