#!/usr/bin/env python3
"""Worker hosts over NATS (#15): a daemon with no workers of its own and
relays offering theirs, through a real nats-server on loopback.  Every
rule of the router holds across relays (lost, duplicated, order and
overlap all 0); a relay killed, a server restarted, a relay partitioned
and back with stale answers, a relay in its own network namespace whose
link is cut: nothing is lost, and nothing runs twice but what a lost
relay held.

TG_NATS_COUNT sets the size of the first scenario (4000 in make check;
`make nats-check` runs 20000)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import natstest					# noqa: E402
import tgtest					# noqa: E402
from tgtest import ScenarioCase, key_chat, wait_until	# noqa: E402

COUNT = int(os.environ.get("TG_NATS_COUNT", "4000"))


class Nats(ScenarioCase):

    needs = ScenarioCase.needs + ("tgrunner-relay",)

    def setUp(self):
        if natstest.nats_server_path() is None:
            self.fail("nats-server is not installed (tests/install-deps.sh)")
        super().setUp()

    def start_nats(self, **kw):
        srv = natstest.NatsServer(self.subdir("nats"), **kw)
        self.addCleanup(srv.close)
        return srv

    def start_relay(self, fake, d, url, name, wait=True, netns=None, **kw):
        env = kw.pop("worker_env", {})
        env.setdefault("TG_RECORD", d.record_path)
        r = natstest.Relay(fake, self.subdir("relay-" + name), url, name,
                           worker_env=env, start=False, **kw)
        r.netns = netns
        self._daemons.append(r)
        self.addCleanup(self._no_sanitizer_reports, r)
        self.addCleanup(r.close)
        r.start()
        if wait:
            r.wait_ready()
        return r

    def daemon(self, fake, url, **kw):
        kw.setdefault("relay_timeout", "4s")
        return self.start_daemon(fake, workers=0, nats_url=url, **kw)

    def assertOnlyHeldRanTwice(self, rep, held, d):
        """Nothing lost, no overlap; what ran twice (and so started again
        after it ended) was held by the lost relay."""
        self.assertEqual(rep.lost, [], rep.summary())
        self.assertEqual(rep.overlap, [], rep.summary())
        again = [o for o in rep.order if "started again after it ended" in o
                 and int(o.split(" id ")[1].split()[0]) in held]
        self.assertEqual([o for o in rep.order if o not in again], [],
                         rep.summary() + "\n" + d.log_tail())
        self.assertTrue(set(rep.duplicated) <= held,
                        "ran twice but not held by the lost relay: %s"
                        % sorted(set(rep.duplicated) - held))

    def wait_slots(self, d, relays, slots):
        """Until the daemon has each relay's slots (relay name -> slots):
        updates generated before would all go to the relays already
        there."""
        def have():
            out = subprocess.run([tgtest.build_path("tgrunnerctl"), "-s",
                                  d.conf["control_socket"], "--json",
                                  "workers"], capture_output=True,
                                 text=True, timeout=10)
            if out.returncode != 0:
                return False
            got = {w.get("relay"): w.get("slots")
                   for w in json.loads(out.stdout)["workers"]}
            return all(got.get(r.name) == slots for r in relays)
        wait_until(have, 60, what="the relays' slots at the daemon")

    def served_by(self, rec, relay_pids):
        return {r.id for r in rec.refresh().recs
                if r.kind == "S" and r.pid in relay_pids}

    # -----------------------------------------------------------------

    def test_two_relays_keep_every_rule(self):
        fake = self.start_fake()
        srv = self.start_nats()
        d = self.daemon(fake, srv.url)
        env = {"TG_SLEEP_MS": "0-2", "TG_SLOTS": "4"}
        a = self.start_relay(fake, d, srv.url, "a", workers=3,
                             worker_env=dict(env))
        b = self.start_relay(fake, d, srv.url, "b", workers=3,
                             worker_env=dict(env))
        self.wait_slots(d, (a, b), 3 * 4)
        ids = self.generate(fake, COUNT, 500, dist="hot", hot_share=0.1)
        t0 = time.monotonic()
        rec = self.finish(fake, d, ids, timeout=120 + COUNT / 100)
        sys.stderr.write("%d updates through two relays in %.1fs\n"
                         % (COUNT, time.monotonic() - t0))
        rep = rec.check(ids, key_of=key_chat)
        self.assertReport(rep, d)
        self.assertEqual(rep.duplicated, {})
        pa, pb = set(a.worker_pids()), set(b.worker_pids())
        ends = [r for r in rec.recs if r.kind == "E"]
        na = sum(1 for r in ends if r.pid in pa)
        nb = sum(1 for r in ends if r.pid in pb)
        self.assertEqual(na + nb, len(ids), "every update ran on a relay")
        self.assertGreater(min(na, nb), len(ids) // 10,
                           "both relays served (a %d, b %d)" % (na, nb))
        # the daemon's shutdown ended both sessions cleanly; relays wait on
        a.wait_log(r"the daemon is stopping: left the session")
        b.wait_log(r"the daemon is stopping: left the session")
        self.assertTrue(a.running() and b.running())
        self.assertEqual(a.stop(), 0)
        self.assertEqual(b.stop(), 0)
        self.assertNoLeftovers(a)

    def test_relay_killed_mid_run(self):
        fake = self.start_fake()
        srv = self.start_nats()
        d = self.daemon(fake, srv.url)
        env = {"TG_SLEEP_MS": "5-20"}
        a = self.start_relay(fake, d, srv.url, "a", workers=4,
                             worker_env=dict(env))
        b = self.start_relay(fake, d, srv.url, "b", workers=4,
                             worker_env=dict(env))
        ids = self.generate(fake, 1500, 100)
        rec = d.records()
        wait_until(lambda: len(self.served_by(
            rec, set(a.worker_pids()))) >= 100, 60, what="relay a at work")
        pa = set(a.worker_pids())
        t = a.crash()
        d.wait_log(r"relay a epoch=\d+: session ended", timeout=20)
        rec.wait_ended(ids, 120, daemon=d)
        # A done that had not left relay a when it died is lost with it, and
        # the daemon runs what it still held there again: at most the
        # relay's 4 slots, each named in the daemon's log.  The checker
        # excuses a re-run only for an update whose E is the last line of a
        # (one-slot) worker killed with the relay; the re-run ids are also
        # held to those the daemon retried for relay a.
        rep = rec.check(ids, key_of=key_chat, deaths={p: t for p in pa})
        self.assertReport(rep, d)
        self.assertEqual(rep.lost, [])
        retried = {int(m) for m in re.findall(
            r"update=(\d+) attempt=\d+: relay a lost", d.log_text())}
        self.assertLessEqual(len(retried), 4, retried)
        self.assertLessEqual(set(rep.duplicated), retried)
        self.assertTrue(b.running())

    def test_server_restart_mid_run(self):
        fake = self.start_fake()
        srv = self.start_nats()
        d = self.daemon(fake, srv.url, relay_timeout="10s")
        env = {"TG_SLEEP_MS": "1-5", "TG_SLOTS": "2"}
        self.start_relay(fake, d, srv.url, "a", workers=3,
                         worker_env=dict(env))
        self.start_relay(fake, d, srv.url, "b", workers=3,
                         worker_env=dict(env))
        ids = self.generate(fake, 3000, 200, rate=1000)
        rec = d.records()
        wait_until(lambda: rec.refresh().count("E") >= 600, 60,
                   what="first updates done")
        srv.restart()
        d.wait_log(r"nats: disconnected", timeout=10)
        rec = self.finish(fake, d, ids, timeout=120)
        rep = rec.check(ids, key_of=key_chat)
        self.assertReport(rep, d)
        # a short outage loses no relay: nothing ran twice
        self.assertEqual(rep.duplicated, {})
        self.assertEqual(d.grep(r"session ended: (silent|its NATS)"), [])

    def test_partitioned_relay_stale_answers_ignored(self):
        fake = self.start_fake()
        srv = self.start_nats()
        d = self.daemon(fake, srv.url, relay_timeout="2s")
        a = self.start_relay(fake, d, srv.url, "a", workers=4,
                             worker_env={"TG_SLEEP_MS": "600",
                                         "TG_REPLY": "1"})
        ids = self.generate(fake, 40, 40)
        rec = d.records()
        wait_until(lambda: len(self.served_by(
            rec, set(a.worker_pids()))) >= 4, 30, what="relay a holds updates")
        a.stop_signal(signal.SIGSTOP)		# partitioned: silent
        try:
            d.wait_log(r"relay a epoch=\d+: session ended: silent",
                       timeout=20)
            # all it could have started, by all its workers
            held = self.served_by(rec, set(a.worker_pids()))
            b = self.start_relay(fake, d, srv.url, "b", workers=4,
                                 worker_env={"TG_SLEEP_MS": "0-5",
                                             "TG_REPLY": "1"})
            rec.wait_ended(ids, 60, daemon=d)
        finally:
            a.stop_signal(signal.SIGCONT)
        # back: its answers are for a session that is over
        a.wait_log(r"session epoch=\d+ is over|not reported", timeout=20)
        a.wait_ready(timeout=20)		# and it joins anew
        rec.refresh()
        rep = rec.check(ids, key_of=key_chat)
        self.assertOnlyHeldRanTwice(rep, held, d)
        # each update's reply went out once: stale answers changed nothing
        self.wait_confirmed(fake, max(ids))
        time.sleep(1.0)			# room for a wrong late reply
        texts = [c["params"].get("text") for c in
                 fake.calls("sendMessage")]
        self.assertEqual(len(texts), len(ids),
                         "sendMessage calls: %d for %d updates"
                         % (len(texts), len(ids)))
        self.assertEqual(d.stop(), 0)
        self.assertTrue(b.running())

    def test_server_permissions_keep_relays_to_their_subjects(self):
        """proto/NATS.md's server configuration: each user publishes only
        on its own subjects.  A relay that calls itself w2 but logs in as
        w1 cannot even say hello; w1 itself works."""
        conf = """
authorization {
  users = [
    { user: daemon, password: "dpass",
      permissions: { publish: ["tgrunner.daemon.>"]
                     subscribe: ["tgrunner.relay.*.*"] } }
    { user: w1, password: "w1pass",
      permissions: { publish: ["tgrunner.relay.w1.>"]
                     subscribe: ["tgrunner.daemon.w1.>"] } }
  ]
}
"""
        fake = self.start_fake()
        srv = self.start_nats(extra=conf)
        pw = {}
        for user, secret in (("daemon", "dpass"), ("w1", "w1pass")):
            pw[user] = os.path.join(self.tmp, user + ".pw")
            with open(pw[user], "w") as f:
                f.write(secret + "\n")
        d = self.daemon(fake, srv.url, nats_user="daemon",
                        nats_password_file=pw["daemon"])
        self.start_relay(fake, d, srv.url, "w1", nats_user="w1",
                         nats_password_file=pw["w1"])
        liar = self.start_relay(fake, d, srv.url, "w2", wait=False,
                                nats_user="w1",
                                nats_password_file=pw["w1"])
        liar.wait_log(r"nats: not permitted", timeout=20)
        ids = self.generate(fake, 200, 20)
        rec = self.finish(fake, d, ids, timeout=60)
        self.assertReport(rec.check(ids, key_of=key_chat), d)
        self.assertEqual(d.grep(r"relay w2"), [])
        self.assertEqual(liar.grep(r"joined the daemon"), [])

    # -----------------------------------------------------------------

    def test_hosts_in_network_namespaces(self):
        """The daemon and nats-server on one host (the test's namespace),
        each relay in a namespace of its own behind a veth pair; relay a's
        link is cut past relay_timeout and restored."""
        if os.geteuid() != 0:
            self.skipTest("network namespaces need root")
        tag = "tg%d" % (os.getpid() % 100000)
        nets = []

        def ip(*args, check=True):
            return subprocess.run(["ip"] + list(args), check=check,
                                  capture_output=True, text=True)

        def cleanup():
            for ns in nets:
                ip("netns", "del", ns, check=False)
        self.addCleanup(cleanup)
        hosts = {}
        for i, name in enumerate(("a", "b")):
            ns = "%s%s" % (tag, name)
            host_if, ns_if = "%sh%s" % (tag, name), "%sn%s" % (tag, name)
            r = ip("netns", "add", ns, check=False)
            if r.returncode != 0:
                self.skipTest("cannot make a network namespace: %s"
                              % r.stderr.strip())
            nets.append(ns)
            base = "10.213.%d" % (i + 1)
            ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            ip("link", "set", ns_if, "netns", ns)
            ip("addr", "add", base + ".1/24", "dev", host_if)
            ip("link", "set", host_if, "up")
            ip("-n", ns, "addr", "add", base + ".2/24", "dev", ns_if)
            ip("-n", ns, "link", "set", ns_if, "up")
            ip("-n", ns, "link", "set", "lo", "up")
            hosts[name] = (ns, base + ".1", ns_if)
        fake = self.start_fake()
        srv = self.start_nats(addr="0.0.0.0")
        d = self.daemon(fake, "nats://127.0.0.1:%d" % srv.port,
                        relay_timeout="3s")
        relays = {}
        for name, (ns, addr, _) in hosts.items():
            relays[name] = self.start_relay(
                fake, d, "nats://%s:%d" % (addr, srv.port), name,
                netns=ns, workers=4,
                worker_env={"TG_SLEEP_MS": "5-15"})
        a, b = relays["a"], relays["b"]
        ids = self.generate(fake, 1500, 100, rate=300)
        rec = d.records()
        wait_until(lambda: len(self.served_by(
            rec, set(a.worker_pids()))) >= 50, 60, what="relay a at work")
        ns, _, ns_if = hosts["a"]
        ip("-n", ns, "link", "set", ns_if, "down")
        t_cut = time.time_ns()
        d.wait_log(r"relay a epoch=\d+: session ended", timeout=30)
        held = self.served_by(rec, set(a.worker_pids()))
        ip("-n", ns, "link", "set", ns_if, "up")
        a.wait_log(r"joined the daemon", timeout=60,
                   since=len(a.lines))
        rec.wait_ended(ids, 120, daemon=d)
        rep = rec.check(ids, key_of=key_chat)
        self.assertOnlyHeldRanTwice(rep, held, d)
        self.assertTrue(b.running())
        # a rejoined and worked again
        self.assertTrue(any(r.t > t_cut and r.pid in set(a.worker_pids())
                            for r in rec.recs if r.kind == "E") or
                        rec.refresh().count("E") >= len(ids))


if __name__ == "__main__":
    tgtest.main()
