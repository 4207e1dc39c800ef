#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""Delivery: every update exactly once, per-key order and exclusion, for
classic workers, one many-slot worker, no keys, and every session_key mode
(judged with keys computed here from the injected updates, not with the
daemon's own)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402
from tgtest import ScenarioCase, key_chat	# noqa: E402

COUNT = 3000
CHATS = 200


class Delivery(ScenarioCase):

    def check_chat_run(self, rec, ids):
        rep = rec.check(ids, key_of=key_chat)
        self.assertReport(rep)
        self.assertEqual(rep.ends, COUNT)
        # the per-chat "seq <n>" numbers end in order 1..n: order as the
        # user sees it, independent of update ids
        seqs = {}
        for r in rec.recs:
            if r.kind == "E":
                seqs.setdefault(r.chat, []).append(r.seq)
        for chat, s in seqs.items():
            self.assertEqual(s, list(range(1, len(s) + 1)),
                             "chat %s ended out of sequence" % chat)
        self.assertEqual(sum(len(s) for s in seqs.values()), COUNT)

    def run_chats(self, workers, env):
        fake = self.start_fake()
        d = self.start_daemon(fake, workers=workers, worker_env=env)
        ids = self.generate(fake, COUNT, CHATS)
        rec = self.finish(fake, d, ids)
        self.check_chat_run(rec, ids)
        # the keys the daemon sent agree (chat mode): same verdict
        self.assertReport(rec.check(ids))
        lat = rec.latency(fake.released())
        sys.stderr.write("latency ms: %s\n" % {
            k: round(v, 1) for k, v in lat.items()})
        return rec

    def test_four_workers(self):
        self.run_chats(4, {"TG_SLEEP_MS": "0-3"})

    def test_one_worker_eight_slots(self):
        rec = self.run_chats(1, {"TG_SLEEP_MS": "0-3", "TG_SLOTS": "8"})
        # one process did it all, with real concurrency across chats
        pids = {r.pid for r in rec.recs}
        self.assertEqual(len(pids), 1, pids)
        self.assertGreater(max_concurrency(rec), 1)

    def test_keyless(self):
        fake = self.start_fake()
        d = self.start_daemon(fake, workers=4, session_key="none",
                              worker_env={"TG_SLEEP_MS": "0-3"})
        ids = self.generate(fake, COUNT, CHATS)
        rec = self.finish(fake, d, ids)
        rep = rec.check(ids, key_of=lambda r: ())
        self.assertReport(rep)
        self.assertTrue(all(r.keys == () for r in rec.recs),
                        "keys sent although session_key = none")

    def test_session_key_modes(self):
        n = 800
        ups, keymap = custom_updates(self.rng, n)
        for mode in ("user", "chat_user", "chat_topic", "chat, user",
                     "chat"):
            with self.subTest(session_key=mode):
                fake = self.start_fake()
                d = self.start_daemon(fake, name=mode.replace(", ", "+"),
                                      workers=4, session_key=mode,
                                      worker_env={"TG_SLEEP_MS": "0-3"})
                ids = self.inject(fake, ups)
                kinds = [k.strip() for k in mode.split(",")]
                byid = {i: keymap(ups[j], kinds)
                        for j, i in enumerate(ids)}
                rec = self.finish(fake, d, ids)
                rep = rec.check(ids, key_of=lambda r: byid[r.id])
                self.assertReport(rep, d)
                for r in rec.recs:
                    if r.kind == "S":
                        self.assertEqual(
                            len(r.keys), len(kinds),
                            "update %d: keys %s for %r"
                            % (r.id, r.keys, mode))


def max_concurrency(rec):
    """Most updates in progress at once (S..E/F/C)."""
    cur = best = 0
    for r in rec.recs:
        cur += 1 if r.kind == "S" else -1
        best = max(best, cur)
    return best


def custom_updates(rng, n):
    """n updates where chats and users overlap across chats: 12 users
    writing in 6 forum supergroups (half the time in a topic) and in their
    private chats, plus callback queries.  Returns (updates, keymap) where
    keymap(update, kinds) gives the keys this test expects."""
    groups = [-1001000000001 - i for i in range(6)]
    users = list(range(501, 513))
    ups = []
    for i in range(n):
        u = rng.choice(users)
        chat = u if rng.random() < 0.25 else rng.choice(groups)
        msg = {"message_id": i + 1, "date": 1700000000 + i,
               "chat": {"id": chat,
                        "type": "private" if chat > 0 else "supergroup"},
               "text": "m %d" % i}
        if chat < 0 and rng.random() < 0.5:
            msg["chat"]["is_forum"] = True
            msg["message_thread_id"] = rng.choice([3, 5, 7])
            msg["is_topic_message"] = True
        who = {"id": u, "is_bot": False, "first_name": "u%d" % u}
        if rng.random() < 0.1:
            msg["from"] = {"id": 1, "is_bot": True, "first_name": "bot"}
            msg.pop("message_thread_id", None)
            msg.pop("is_topic_message", None)
            ups.append({"callback_query": {
                "id": "cb%d" % i, "from": who, "chat_instance": "ci%d" % chat,
                "data": "d%d" % i, "message": msg}})
        else:
            msg["from"] = who
            ups.append({"message": msg})
    return ups, expected_keys


def expected_keys(update, kinds):
    if "message" in update:
        m = update["message"]
        user = m["from"]["id"]
    else:
        m = update["callback_query"]["message"]
        user = update["callback_query"]["from"]["id"]
    chat = m["chat"]["id"]
    topic = m.get("message_thread_id") if m.get("is_topic_message") else None
    out = []
    for k in kinds:
        if k == "chat":
            out.append(("chat", chat))
        elif k == "user":
            out.append(("user", user))
        elif k == "chat_user":
            out.append(("chat_user", chat, user))
        elif k == "chat_topic":
            out.append(("chat_topic", chat, topic))
    return out


if __name__ == "__main__":
    tgtest.main()
