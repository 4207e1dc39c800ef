#!/usr/bin/env python3
"""Update types: the newest ones (managed_bot, guest_message) arrive by
default and are keyed; a type this tgrunnerd does not know arrives too
(allowed_updates unset asks for Telegram's default set) and is keyed from
its own chat and user members, so it never runs beside the same chat's
messages, and is named in the log once; ids that repeat or go back within
one getUpdates answer are logged with the ids and counted, and nothing is
lost or run twice for them."""

import os
import sys
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import promparse				# noqa: E402
import tgtest					# noqa: E402
from tgtest import ScenarioCase, key_chat	# noqa: E402


def user(uid):
    return {"id": uid, "is_bot": False, "first_name": "u%d" % uid}


def msg(chat, uid, text, mid=1):
    return {"message_id": mid, "date": 1700000000, "text": text,
            "chat": {"id": chat, "type": "private" if chat > 0 else "group"},
            "from": user(uid)}


class UpdateTypes(ScenarioCase):

    def test_newest_types(self):
        fake = self.start_fake()
        d = self.start_daemon(fake, workers=2, session_key="chat, user")
        ids = self.inject(fake, [
            {"managed_bot": {"user": user(42), "bot": {
                "id": 999, "is_bot": True, "first_name": "B"}}},
            {"guest_message": msg(-100, 77, "@bot hi")},
        ])
        rec = self.finish(fake, d, ids)
        keys = {r.id: r.keys for r in rec.recs if r.kind == "S"}
        self.assertEqual(keys[ids[0]], ("user:42",))
        self.assertEqual(keys[ids[1]], ("chat:-100", "user:77"))
        self.assertEqual(d.grep(r"does not know"), [])

    def test_unknown_type_keyed_by_its_chat(self):
        fake = self.start_fake()
        # allowed_updates unset: Telegram's default set, newer types too
        d = self.start_daemon(fake, workers=3,
                              worker_env={"TG_SLEEP_MS": "200"})
        updates = []
        for i in range(4):
            updates.append({"message": msg(5, 5, "seq %d" % (2 * i + 1))})
            updates.append({"future_message": msg(5, 5,
                                                  "seq %d" % (2 * i + 2))})
        ids = self.inject(fake, updates)
        rec = self.finish(fake, d, ids)
        keys = {r.id: r.keys for r in rec.recs if r.kind == "S"}
        self.assertEqual({keys[i] for i in ids}, {("chat:5",)})
        # the worker's own view of the chat: never two at once, in order
        self.assertReport(rec.check(ids, key_of=key_chat), d)
        named = d.grep(r"type=future_message: an update type this "
                       r"tgrunnerd does not know")
        self.assertEqual(len(named), 1, d.log_tail())

    def test_ids_out_of_order_in_a_batch(self):
        fake = self.start_fake()
        port = tgtest.free_port()
        d = self.start_daemon(fake, workers=2,
                              metrics_listen="127.0.0.1:%d" % port)
        fake.fault("disorder", method="getUpdates", count=1)
        ids = self.generate(fake, 10, 3)
        m = d.wait_log(r"getUpdates: (\d+) update id\(s\) of \d+ repeat or "
                       r"go back within one batch \((\d+) after (\d+)")
        self.assertGreater(int(m.group(1)), 0)
        self.assertIn(int(m.group(2)), ids)
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
                                    timeout=10) as r:
            fams = promparse.parse(r.read().decode())
        self.assertEqual(promparse.value(fams,
                                         "tgrunner_updates_misordered_total"),
                         int(m.group(1)))
        rec = self.finish(fake, d, ids)
        rep = rec.check(ids, key_of=key_chat)
        self.assertReport(rep, d)
        self.assertEqual(rep.duplicated, {})


if __name__ == "__main__":
    tgtest.main()
