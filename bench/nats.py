#!/usr/bin/env python3
"""Benchmarks of worker hosts over NATS (#15), side by side in one run:

  throughput   50 ms handlers, 100 slots per relay, 1 -> 2 -> 4 relays
               (targets: 2 relays >= 1.9x one relay, 4 relays >= 3.6x)
  latency      release -> end of 0 ms handlers at a steady rate, local
               workers against one relay on loopback (targets: the relay
               adds p50 <= 1 ms, p99 <= 5 ms)
  cpu          the daemon's CPU seconds per update, local socket against
               NATS (target: NATS <= 2x)

Each measurement is repeated --runs times, interleaved (local, relay,
local, relay ...), and the median is reported.  Writes
bench/results/nats.md, nats.json and nats-throughput.svg (gnuplot).

  python3 bench/nats.py --builddir /tmp/b            # the real thing
  python3 bench/nats.py --builddir /tmp/b --quick    # a check that it runs

Run it on a quiet machine: other load moves every number.
"""

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lib"))
sys.path.insert(0, HERE)

import natstest		# noqa: E402
import run as benchrun	# noqa: E402
import tgtest		# noqa: E402
from fakeapi import FakeApi	# noqa: E402

SLOTS_PER_RELAY = 100
WORKERS_PER_RELAY = 4		# x 25 slots each


def progress(msg):
    sys.stderr.write("bench-nats: %s\n" % msg)
    sys.stderr.flush()


class Setup:
    """A fake Bot API, a nats-server, a daemon, and relays (or local
    workers), in one temp dir; close() kills them all."""

    def __init__(self, builddir, relays, local_workers=0, env=None,
                 slots=1):
        os.environ["TG_BUILDDIR"] = builddir
        tgtest.BUILDDIR = builddir
        self.procs = []
        self.nats = None
        self.fake = None
        try:
            self._start(builddir, relays, local_workers, env, slots)
        except BaseException:
            self.close()
            raise

    def _start(self, builddir, relays, local_workers, env, slots):
        self.tmp = tempfile.mkdtemp(prefix="tgbench-nats-")
        self.fake = FakeApi(builddir=builddir)
        self.nats = natstest.NatsServer(self._dir("nats"))
        cmd = benchrun.worker_command(builddir)
        env = dict(env or {})
        env["TG_RECORD"] = os.path.join(self.tmp, "record.txt")
        dconf = {"workers": local_workers, "worker_command": cmd,
                 "max_pending": 20000, "update_timeout": "60s",
                 "log_level": "notice"}
        if relays:
            dconf["nats_url"] = self.nats.url
        denv = dict(env)
        if local_workers:
            denv["TG_SLOTS"] = str(slots)
        self.daemon = tgtest.Daemon(self.fake, self._dir("d"),
                                    worker_env=denv, start=False, **dconf)
        self.daemon.start()
        self.procs.append(self.daemon)
        self.daemon.wait_ready()
        renv = dict(env)
        renv["TG_SLOTS"] = str(SLOTS_PER_RELAY // WORKERS_PER_RELAY)
        for i in range(relays):
            r = natstest.Relay(self.fake, self._dir("r%d" % i),
                               self.nats.url, "r%d" % i,
                               workers=WORKERS_PER_RELAY, worker_env=renv,
                               worker_command=cmd, log_level="notice",
                               start=False)
            r.start()
            self.procs.append(r)
            r.wait_ready()
        for r in self.procs[1:]:
            benchrun.wait_until(lambda: len(r.worker_pids()) >=
                                WORKERS_PER_RELAY, 60, "relay workers")
        time.sleep(1.0)		# their hellos, and the slots offered
        self.record = env["TG_RECORD"]

    def _dir(self, name):
        p = os.path.join(self.tmp, name)
        os.makedirs(p, exist_ok=True)
        return p

    def close(self):
        for p in self.procs:
            try:
                p.close()
            except Exception:
                pass
        if self.nats is not None:
            self.nats.close()
        if self.fake is not None:
            self.fake.stop()
        if getattr(self, "tmp", None):
            shutil.rmtree(self.tmp, ignore_errors=True)


def ends(path):
    return tgtest.Records(path)


def run_throughput(builddir, relays, count):
    s = Setup(builddir, relays, env={"TG_SLEEP_MS": "50"})
    try:
        # debug level for the slot lines is not on: wait a moment instead
        rec = ends(s.record)
        first, last = s.fake.generate(count, max(count // 4, 100))
        ids = range(first, last + 1)
        t0 = time.monotonic()
        rec.wait_ended(ids, 900, daemon=s.daemon)
        dt = time.monotonic() - t0
        rep = rec.check(list(ids), key_of=tgtest.key_chat)
        return {"relays": relays, "updates": count, "seconds": dt,
                "per_s": count / dt, "ok": rep.ok}
    finally:
        s.close()


def run_latency(builddir, remote, count, rate):
    s = Setup(builddir, 1 if remote else 0,
              local_workers=0 if remote else WORKERS_PER_RELAY,
              slots=SLOTS_PER_RELAY // WORKERS_PER_RELAY)
    try:
        rec = ends(s.record)
        u = benchrun.Usage(s.daemon.pid)
        u.start()
        first, last = s.fake.generate(count, max(count // 4, 100),
                                      rate=rate)
        ids = list(range(first, last + 1))
        rec.wait_ended(ids, 900, daemon=s.daemon)
        cpu = u.sample()["cpu_main"]
        lat = rec.latency(s.fake.released())
        return {"remote": remote, "updates": count, "p50": lat["p50"],
                "p99": lat["p99"], "cpu_per_update_us":
                cpu / count * 1e6, "ok": rec.check(
                    ids, key_of=tgtest.key_chat).ok}
    finally:
        s.close()


def med(rows, key):
    return statistics.median(r[key] for r in rows)


def spread(rows, key):
    """min-max of the runs, as text"""
    v = [r[key] for r in rows]
    return "%.4g-%.4g" % (min(v), max(v))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--builddir", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    builddir = os.path.abspath(args.builddir)
    runs = args.runs or (1 if args.quick else 5)
    tcount = 400 if args.quick else 40000
    lcount, rate = (300, 300) if args.quick else (20000, 1000)
    started = time.time()
    thr = {1: [], 2: [], 4: []}
    lat = {False: [], True: []}
    for i in range(runs):
        for n in (1, 2, 4):
            progress("run %d: throughput, %d relay(s)" % (i + 1, n))
            thr[n].append(run_throughput(builddir, n, tcount * n // 4
                                         if not args.quick else tcount))
        for remote in (False, True):
            progress("run %d: latency and cpu, %s" % (
                i + 1, "one relay" if remote else "local workers"))
            lat[remote].append(run_latency(builddir, remote, lcount, rate))
    t1 = med(thr[1], "per_s")
    res = {
        "throughput": {n: {"per_s": med(v, "per_s"),
                           "x_one": med(v, "per_s") / t1,
                           "ok": all(r["ok"] for r in v)}
                       for n, v in thr.items()},
        "latency_ms": {("relay" if k else "local"): {
            "p50": med(v, "p50"), "p99": med(v, "p99"),
            "cpu_per_update_us": med(v, "cpu_per_update_us"),
            "ok": all(r["ok"] for r in v)} for k, v in lat.items()},
        "raw": {"throughput": thr, "latency": {str(k): v
                                               for k, v in lat.items()}},
        "quick": args.quick, "runs": runs,
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "started": started, "seconds": time.time() - started,
    }
    loc, rel = res["latency_ms"]["local"], res["latency_ms"]["relay"]
    lines = [
        "# Worker hosts over NATS%s" % (" (quick check: not a measurement)"
                                        if args.quick else ""),
        "",
        "`%s`, %d run(s) interleaved, medians." % (res["command"], runs),
        "",
        "| relays (100 slots each, 50 ms handlers) | updates/s | spread (min-max) | x one relay | target |",
        "|---|---|---|---|---|",
    ]
    for n, target in ((1, "-"), (2, ">= 1.9"), (4, ">= 3.6")):
        r = res["throughput"][n]
        lines.append("| %d | %.0f | %s | %.2f | %s |" % (
            n, r["per_s"], spread(thr[n], "per_s"), r["x_one"], target))
    lines += ["", "| 0 ms handlers, %d/s | p50 ms | p99 ms | daemon CPU us/update |" % rate,
              "|---|---|---|---|",
              "| local workers | %.2f | %.2f | %.1f |" % (
                  loc["p50"], loc["p99"], loc["cpu_per_update_us"]),
              "| one relay over NATS | %.2f | %.2f | %.1f |" % (
                  rel["p50"], rel["p99"], rel["cpu_per_update_us"]),
              "| added by NATS (target p50 <= 1, p99 <= 5; CPU <= 2x) | "
              "%.2f | %.2f | %.2fx |" % (
                  rel["p50"] - loc["p50"], rel["p99"] - loc["p99"],
                  rel["cpu_per_update_us"] / max(loc["cpu_per_update_us"],
                                                 1e-9)),
              "",
              "Spread (min-max of the runs): local p50 %s, p99 %s, CPU %s; "
              "relay p50 %s, p99 %s, CPU %s." % (
                  spread(lat[False], "p50"), spread(lat[False], "p99"),
                  spread(lat[False], "cpu_per_update_us"),
                  spread(lat[True], "p50"), spread(lat[True], "p99"),
                  spread(lat[True], "cpu_per_update_us"))]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    os.makedirs(args.out, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    with open(os.path.join(args.out, "nats%s.md" % suffix), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "nats%s.json" % suffix), "w") as f:
        json.dump(res, f, indent=1, default=str)
    benchrun.gnuplot(os.path.join(args.out, "nats-throughput%s.svg" % suffix),
                     "Throughput with relays (50 ms handlers)", "relays",
                     "updates/s", [("tgrunnerd + relays", [
                         (n, res["throughput"][n]["per_s"])
                         for n in (1, 2, 4)]),
                         ("linear", [(n, n * t1) for n in (1, 2, 4)])])


if __name__ == "__main__":
    main()
