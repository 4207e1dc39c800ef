#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""No head-of-line blocking: one chat with half of all updates must not
hold back the others.  Judged by ratios of the work actually done, not by
absolute times."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402
from tgtest import ScenarioCase, key_chat	# noqa: E402

COUNT = 2000
CHATS = 41		# the hot one (start_chat) + 40 others
HOT = 1000		# start_chat in the fake's generator


class HotChat(ScenarioCase):

    def test_hot_chat_does_not_block_others(self):
        fake = self.start_fake()
        d = self.start_daemon(fake, workers=4, worker_env={"TG_SLEEP_MS": "10"})
        ids = self.generate(fake, COUNT, CHATS, dist="hot", hot_share=0.5)
        rec = self.finish(fake, d, ids, timeout=120)
        self.assertReport(rec.check(ids, key_of=key_chat), d)

        chats = rec.by_chat()
        self.assertIn(HOT, chats, "hot chat %d not seen" % HOT)
        hot = chats.pop(HOT)
        self.assertGreaterEqual(hot["n"], COUNT * 0.4)
        # The hot chat is serial: its last E comes after all its work.
        # Everything else must be done well before that, when the others
        # are spread over the other slots.
        limit = hot["last_e"] - hot["work_ns"] // 2
        late = {c: (v["last_e"] - limit) / 1e9 for c, v in chats.items()
                if v["last_e"] > limit}
        sys.stderr.write(
            "hot chat: %d updates, work %.2fs, span %.2fs; others' last end "
            "%.2fs before hot's last end\n" % (
                hot["n"], hot["work_ns"] / 1e9,
                (hot["last_e"] - hot["first_s"]) / 1e9,
                (hot["last_e"] - max(v["last_e"] for v in chats.values()))
                / 1e9))
        self.assertFalse(late, "chats finishing within half the hot chat's "
                         "work of its end (seconds late): %s" % late)
        # one hot key holds at most one slot: its span covers its work
        self.assertGreaterEqual(hot["last_e"] - hot["first_s"],
                                hot["work_ns"])


if __name__ == "__main__":
    tgtest.main()
