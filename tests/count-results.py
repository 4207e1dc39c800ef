#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""Count individual test cases in an automake build tree after `make check`.

Each test program's .log holds its own summary: Check prints
"NN%: Checks: N, Failures: F, Errors: E", the scenario tests print
"SUMMARY name: N run, F failures, E errors, S skipped -> ...".  A program
whose .trs says FAIL/ERROR but whose log has no such summary (it crashed)
counts as one failure.  Prints "passed failed" for the caller to add up.
"""
import glob
import os
import re
import sys

CHECK = re.compile(r"^\d+%: Checks: (\d+), Failures: (\d+), Errors: (\d+)", re.M)
PY = re.compile(r"^SUMMARY [^:]+: (\d+) run, (\d+) failures, (\d+) errors, "
                r"(\d+) skipped", re.M)


def count_one(result, text):
    """(passed, failed) of one test program."""
    m = CHECK.findall(text)
    p = PY.findall(text)
    if m:
        n, fl, er = map(int, m[-1])
        passed, failed = n - fl - er, fl + er
    elif p:
        n, fl, er, sk = map(int, p[-1])
        passed, failed = n - fl - er - sk, fl + er
    else:
        passed, failed = int(result == "PASS"), 0
    # the harness's verdict wins over a summary that claims success
    if result in ("FAIL", "ERROR", "XPASS") and failed == 0:
        failed = 1
    return passed, failed


def count(builddir):
    passed = failed = 0
    for trs in glob.glob(os.path.join(builddir, "**", "*.trs"), recursive=True):
        with open(trs) as f:
            result = re.search(r"^:test-result: (\S+)", f.read(), re.M)
        try:
            with open(trs[:-4] + ".log", errors="replace") as f:
                text = f.read()
        except OSError:
            text = ""
        p, f = count_one(result.group(1) if result else "ERROR", text)
        passed += p
        failed += f
    return passed, failed


if __name__ == "__main__":
    tp = tf = 0
    for d in sys.argv[1:]:
        p, f = count(d)
        tp += p
        tf += f
    print(tp, tf)
