#!/usr/bin/env python3
"""Damage does not spread.  30 updates are fetched, confirmed to Telegram
and left unfinished in the journal (the worker holds the first one), the
daemon is SIGKILLed, and the journal is then damaged: a flipped byte in the
5th record, a cut in its middle, emptied, removed.  The next start keeps
every record the damage did not touch and says, at error or warning level,
what it lost; a flipped byte also leaves journal.damaged.<time>.  A
state_dir others may write to, or a journal that is a symbolic link, is
refused with exit status 73.

The journal format is read here from proto/JOURNAL.md, independently of
daemon/journal.c: header "TGRJ" u32 version, records u32 length, u32 crc,
u8 type, payload (UPDATE = type 1, i64 update_id, JSON)."""

import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402
from tgtest import ScenarioCase	# noqa: E402

COUNT = 30


def records(path):
    """[(offset, length, type, update_id or None)] of a journal file."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"TGRJ", data[:8]
    out, off = [], 8
    while off + 9 <= len(data):
        length, _crc = struct.unpack_from("<II", data, off)
        if length == 0:
            break			# zeros written ahead: the end
        rtype = data[off + 8]
        uid = struct.unpack_from("<q", data, off + 9)[0] \
            if length >= 9 and rtype in (1, 2, 3, 5) else None
        out.append((off, length, rtype, uid))
        off += 8 + length
    return out


class JournalDamage(ScenarioCase):

    def pending_journal(self):
        """A killed daemon whose journal holds COUNT confirmed updates
        not done (each fetched alone: one record each); returns the
        daemon (stopped), the ids and the UPDATE records."""
        fake = self.start_fake()
        self.fake = fake
        d = self.start_daemon(fake, workers=1, update_timeout="10m",
                              worker_env={"TG_SLEEP_MS": "600000"})
        ids = []
        for i in range(COUNT):
            ids += self.generate(fake, 1, 1)
            self.wait_confirmed(fake, ids[-1])
        d.crash()
        recs = [r for r in records(os.path.join(d.state_dir, "journal"))
                if r[2] == 1]
        self.assertEqual([r[3] for r in recs], ids)
        d.worker_env = {"TG_RECORD": d.record_path}
        return d, ids, recs

    def restart_and_run(self, d):
        d.start()
        d.wait_ready()

    def test_flipped_byte_mid_journal(self):
        d, ids, recs = self.pending_journal()
        path = os.path.join(d.state_dir, "journal")
        off = recs[4][0] + 8 + 1 + 8 + 3	# in the 5th update's JSON
        with open(path, "r+b") as f:
            f.seek(off)
            b = f.read(1)
            f.seek(off)
            f.write(bytes([b[0] ^ 0x01]))
        self.restart_and_run(d)
        m = d.wait_log(r"<3>journal: .*damaged record at offset (\d+): "
                       r"skipping (\d+) bytes .*type=UPDATE update=(\d+)")
        self.assertEqual(int(m.group(1)), recs[4][0])
        self.assertEqual(int(m.group(2)), 8 + recs[4][1])
        self.assertEqual(int(m.group(3)), ids[4])
        d.wait_log(r"<3>journal: .*1 damaged region\(s\), \d+ bytes "
                   r"skipped, (\d+) good records after them kept")
        kept = [n for n in os.listdir(d.state_dir)
                if n.startswith("journal.damaged.")]
        self.assertEqual(len(kept), 1)
        # everything but the damaged update runs; the 25 after it too
        rest = ids[:4] + ids[5:]
        rec = d.records()
        rec.wait_ended(rest, 60, daemon=d)
        self.assertNotIn(ids[4], rec.ended())
        # and the journal is clean again
        d.crash()
        self.restart_and_run(d)
        self.assertEqual(d.grep(r"damaged", since=d.run_start), [])

    def test_truncated_journal(self):
        d, ids, recs = self.pending_journal()
        path = os.path.join(d.state_dir, "journal")
        cut = recs[19][0] + 20			# in the 20th update
        with open(path, "r+b") as f:
            f.truncate(cut)
        self.restart_and_run(d)
        m = d.wait_log(r"<4>journal: .*damaged or torn record at offset "
                       r"(\d+), no valid record after it: discarding (\d+) "
                       r"bytes .*type=UPDATE update=(\d+)")
        self.assertEqual(int(m.group(1)), recs[19][0])
        self.assertEqual(int(m.group(3)), ids[19])
        rec = d.records()
        rec.wait_ended(ids[:19], 60, daemon=d)
        # and it goes on: new updates are taken in
        more = self.generate(self.fake, 5, 5)
        rec.wait_ended(more, 60, daemon=d)

    def test_empty_or_missing_journal_warns(self):
        d, ids, recs = self.pending_journal()
        path = os.path.join(d.state_dir, "journal")
        open(path, "w").close()
        self.restart_and_run(d)
        d.wait_log(r"<4>journal: .*journal is empty \(0 bytes\): starting "
                   r"with an empty journal")
        d.crash()
        os.unlink(path)
        self.restart_and_run(d)
        d.wait_log(r"<4>journal: .*journal is missing, but journal.lock "
                   r"shows the directory was used before")
        more = self.generate(self.fake, 5, 5)
        d.records().wait_ended(more, 60, daemon=d)

    def test_unsafe_state_dir_refused(self):
        fake = self.start_fake()
        d = self.start_daemon(fake, workers=1)
        self.assertEqual(d.stop(), 0)
        os.chmod(d.state_dir, 0o777)
        d.start()
        self.assertEqual(d.wait_exit(20), 73)
        self.assertTrue(d.grep(r"state_dir .* has mode 0777: it is world "
                               r"writable"), d.log_tail())
        os.chmod(d.state_dir, 0o700)
        path = os.path.join(d.state_dir, "journal")
        os.rename(path, path + ".real")
        os.symlink("journal.real", path)
        d.start()
        self.assertEqual(d.wait_exit(20), 73)
        self.assertTrue(d.grep(r"journal: open .*/journal: Too many levels "
                               r"of symbolic links \(a symbolic link: "
                               r"refused\)"), d.log_tail())
        os.unlink(path)
        os.rename(path + ".real", path)
        d.start()
        d.wait_ready()
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    tgtest.main()
