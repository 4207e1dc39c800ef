#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""Replies are never dropped: when workers finish faster than the Bot API
takes their calls, the daemon stops starting updates (and polling) until
the call queue drains, instead of refusing the calls attached to done."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402
from tgtest import ScenarioCase, key_chat, wait_until	# noqa: E402

COUNT = 3000


class Backpressure(ScenarioCase):

    def test_replies_survive_a_small_call_queue(self):
        fake = self.start_fake()
        # a slow API: every sendMessage takes 20 ms, 4 in flight at most
        fake.fault("slow", method="sendMessage", count=-1, delay_ms=20)
        d = self.start_daemon(fake, workers=4, flood_control=False,
                              api_max_queued=100, api_max_inflight=4,
                              worker_env={"TG_REPLY": "1"})
        ids = self.generate(fake, COUNT, 300)
        wait_until(lambda: len(fake.calls(method="sendMessage")) >= COUNT,
                   120, what="%d replies" % COUNT)
        rec = self.finish(fake, d, ids, timeout=60)
        self.assertReport(rec.check(ids, key_of=key_chat), d)
        self.assertFalse(d.grep(r"dropped"), d.log_tail())
        calls = fake.calls(method="sendMessage")
        self.assertEqual(len(calls), COUNT)
        # per chat, the replies went out in the order of the messages
        seen = {}
        for c in calls:
            chat = c["params"]["chat_id"]
            seq = int(c["params"]["text"].rsplit(" ", 1)[-1])
            self.assertGreater(seq, seen.get(chat, 0),
                               "chat %s: reply to seq %d after %d"
                               % (chat, seq, seen.get(chat, 0)))
            seen[chat] = seq


if __name__ == "__main__":
    tgtest.main()
