#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""tgrunner chaos suite: run the scenarios of scenarios.py, print one table
(scenario, injected, processed, lost, duplicated, violations, verdict) and
exit 1 on any loss or violation.

    TG_BUILDDIR=build TG_SRCDIR=. python3 tests/chaos/run.py [--quick]
        [--only NAME[,NAME...]] [--seed N] [--keep] [--list]
        [--conf KEY=VALUE ...]

--quick scales every scenario down (CI; tests/scenario/test_chaos_quick.py
runs it).  Exit status: 0 all passed (or skipped), 1 a failure, 2 usage.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import chaoslib			# noqa: E402
import scenarios		# noqa: E402


def run(names=None, quick=False, seed=None, keep=False, out=sys.stdout):
    """Run the named scenarios (all by default); returns the Results."""
    todo = [(n, f) for n, f in scenarios.SCENARIOS
            if names is None or n in names]
    if seed is None:
        seed = int(os.environ.get("TG_TEST_SEED") or
                   int(time.time() * 1000) % 1000000007)
    miss = chaoslib.tgtest.missing_binaries()
    if miss:
        raise SystemExit("chaos: missing build products in TG_BUILDDIR=%s: "
                         "%s" % (chaoslib.tgtest.BUILDDIR, ", ".join(miss)))
    out.write("chaos: %s run, seed %d (replay: TG_TEST_SEED=%d)\n"
              % ("quick" if quick else "full", seed, seed))
    out.flush()
    results = []
    for i, (name, fn) in enumerate(todo):
        sys.stderr.write("chaos: %s ...\n" % name)
        r = chaoslib.run_scenario(name, fn, seed + i, quick, keep)
        sys.stderr.write("chaos: %s %s in %.0fs\n" % (name, r.verdict,
                                                      r.seconds))
        results.append(r)
    out.write(chaoslib.table(results) + "\n")
    out.flush()
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="scaled down, for CI")
    ap.add_argument("--only", help="comma-separated scenario names")
    ap.add_argument("--seed", type=int, help="random seed")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temp dirs")
    ap.add_argument("--list", action="store_true", help="list scenarios")
    ap.add_argument("--conf", action="append", default=[],
                    metavar="KEY=VALUE",
                    help="a tgrunner.conf option for every daemon (to "
                    "check that the suite catches a weakened daemon, e.g. "
                    "journal_fsync=off)")
    a = ap.parse_args(argv)
    if a.list:
        for n, f in scenarios.SCENARIOS:
            print("%-18s %s" % (n, (f.__doc__ or "").split("\n")[0]))
        return 0
    for kv in a.conf:
        k, sep, v = kv.partition("=")
        if not sep:
            ap.error("--conf wants KEY=VALUE")
        chaoslib.Ctx.conf_extra[k.strip()] = v.strip()
    names = None
    if a.only:
        names = set(a.only.split(","))
        bad = names - {n for n, _ in scenarios.SCENARIOS}
        if bad:
            ap.error("unknown scenario(s): %s" % ", ".join(sorted(bad)))
    results = run(names, a.quick, a.seed, a.keep)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
