"""Plumbing of the chaos suite: a scenario context (temp dir, fake Bot API,
daemons, cleanups), the result of one scenario, and the table.

A scenario is a function f(ctx) that drives traffic and faults, then calls
ctx.judge(...) once with the records; everything it finds wrong that the
record checker cannot see (the daemon died, the log did not say why, an
offset was confirmed that was never journaled) goes to ctx.problem().
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))

import tgtest					# noqa: E402
from tgtest import Daemon, key_chat, wait_until	# noqa: E402,F401

WORKER_COMM = "tg-test-wor"	# /proc comm is cut at 15 bytes


class Skip(Exception):
    """The scenario cannot run here (e.g. mount is not permitted)."""


class Result:
    """What one scenario found.  violations counts everything that must be
    zero besides lost: order, overlap, attempt numbering, duplicates no
    kill explains, ends of ids never injected, malformed records, and the
    scenario's own problems."""

    def __init__(self, name):
        self.name = name
        self.injected = 0
        self.processed = 0
        self.lost = 0
        self.duplicated = 0
        self.lost_replies = None	# scenarios that reply: replies lost
        self.violations = 0
        self.verdict = "FAIL"
        self.seconds = 0.0
        self.notes = []		# facts worth printing (kills, faults, ...)
        self.problems = []	# why it failed
        self.summary = ""	# the record checker's summary

    @property
    def ok(self):
        return self.verdict in ("PASS", "SKIP")


class Ctx:
    """One scenario's world.  scale multiplies update counts and durations
    (run.py --quick uses a small one)."""

    conf_extra = {}	# run.py --conf: options for every daemon

    def __init__(self, name, seed, quick=False, keep=False):
        self.name = name
        self.quick = quick
        self.seed = seed
        import random
        self.rng = random.Random(seed)
        self.keep = keep
        self.tmp = tempfile.mkdtemp(prefix="tgchaos-%s-" % name)
        self.res = Result(name)
        self._cleanups = []
        self.daemons = []
        self.judged = False

    # -- life cycle -----------------------------------------------------------

    def defer(self, fn, *args):
        self._cleanups.append((fn, args))

    def close(self):
        while self._cleanups:
            fn, args = self._cleanups.pop()
            try:
                fn(*args)
            except Exception as e:		# keep cleaning up
                sys.stderr.write("chaos: cleanup %s: %s\n" % (fn, e))
        if self.keep:
            sys.stderr.write("chaos: kept %s\n" % self.tmp)
        else:
            shutil.rmtree(self.tmp, True)

    def subdir(self, name):
        p = os.path.join(self.tmp, name)
        os.makedirs(p, exist_ok=True)
        return p

    def note(self, fmt, *args):
        self.res.notes.append(fmt % args if args else fmt)

    def problem(self, fmt, *args):
        self.res.problems.append(fmt % args if args else fmt)

    def log(self, fmt, *args):
        sys.stderr.write("chaos[%s]: %s\n" % (self.name,
                                              fmt % args if args else fmt))

    # -- processes ------------------------------------------------------------

    def start_fake(self, **kw):
        from fakeapi import FakeApi
        kw.setdefault("builddir", tgtest.BUILDDIR)
        fake = FakeApi(**kw)
        self.defer(fake.stop)
        return fake

    def start_daemon(self, fake, name="d", wait=True, **kw):
        # the fake does not rate-limit: replies go out at full speed, so
        # that API faults, not pacing, decide what is left at the end
        kw.setdefault("flood_control", False)
        kw.update(self.conf_extra)
        d = Daemon(fake, self.subdir(name), start=False, **kw)
        self.daemons.append(d)
        self.defer(d.close)
        d.start()
        if wait:
            d.wait_ready(60)
        return d

    def generate(self, fake, count, chats, **kw):
        kw.setdefault("seed", self.rng.randrange(1 << 30))
        first, last = fake.generate(count, chats, **kw)
        return list(range(first, last + 1))

    def finish(self, fake, d, ids, timeout=180.0):
        """Wait until every id ended and the offset is confirmed, then stop
        the daemon (must exit 0, leave nothing behind).  Returns the
        Records.  A timeout is not fatal here: the judge counts the loss."""
        rec = d.records()
        try:
            rec.wait_ended(ids, timeout, daemon=d)
        except AssertionError as e:
            self.problem("not everything ended: %s" % str(e).split("\n")[0])
        try:
            wait_until(lambda: fake.stats().get("confirmed_offset", 0)
                       >= max(ids) + 1, 30, what="offset confirmed")
        except AssertionError as e:
            self.problem(str(e))
        if d.running():
            rc = d.stop(60)
            if rc != 0:
                self.problem("daemon exit status %s on SIGTERM" % rc)
            if d.leftovers:
                self.problem("left behind: %s" % d.leftovers)
        else:
            self.problem("daemon not running at the end (status %s)"
                         % d.proc.returncode)
        return rec.refresh()

    # -- verdict ----------------------------------------------------------------

    def expected_replies(self, rec, ids):
        """(chat, seq) of the reply each injected update that ended owes
        (the test worker's TG_REPLY=1)."""
        inj = set(ids)
        return {(r.chat, r.seq) for r in rec.refresh().recs
                if r.kind == "E" and r.id in inj and r.chat is not None}

    @staticmethod
    def received_replies(fake):
        """Counter of (chat, seq) of the replies the fake executed."""
        import collections
        return collections.Counter((c, s) for _, c, s, fault in
                                   tgtest.replies(fake) if fault is None)

    def judge_replies(self, fake, rec, ids, timeout=120.0):
        """Wait for every reply the ended updates owe; count the lost ones
        (must be 0) and note the ones sent twice."""
        want = self.expected_replies(rec, ids)
        try:
            wait_until(lambda: set(self.received_replies(fake)) >= want,
                       timeout, what="every reply")
        except AssertionError:
            pass
        got = self.received_replies(fake)
        self.res.lost_replies = len(want - set(got))
        twice = sum(1 for k, n in got.items() if n > 1)
        self.note("replies: %d owed, %d lost, %d sent more than once",
                  len(want), self.res.lost_replies, twice)
        if self.res.lost_replies:
            self.problem("%d replies never reached the Bot API, e.g. %s"
                         % (self.res.lost_replies,
                            sorted(want - set(got))[:5]))
        return twice

    def judge(self, rec, ids, **check_kw):
        """Fill the result from the records (Records.check keywords)."""
        check_kw.setdefault("key_of", key_chat)
        rep = rec.check(ids, **check_kw)
        r = self.res
        r.injected = rep.injected
        inj = set(ids)
        r.processed = sum(1 for i in rec.end_count if i in inj)
        r.lost = len(rep.lost)
        r.duplicated = len(rep.duplicated)
        r.violations = (len(rep.order) + len(rep.overlap) +
                        len(rep.attempts) + len(rep.unexplained_dups) +
                        len(rep.unexpected) + len(rep.unmatched) +
                        len(rep.bad_lines))
        r.summary = rep.summary()
        self.judged = True
        return rep

    def check_sanitizers(self):
        for d in self.daemons:
            bad = d.sanitizer_reports()
            if bad:
                self.problem("sanitizer reports in %s: %s"
                             % (d.log_path, bad[0]))


def run_scenario(name, fn, seed, quick=False, keep=False):
    """Run one scenario; always returns a Result (exceptions -> FAIL).
    Cleans up (processes, mounts, temp dir) even on ^C."""
    ctx = Ctx(name, seed, quick, keep)
    t0 = time.monotonic()
    try:
        fn(ctx)
        ctx.check_sanitizers()
        r = ctx.res
        if not ctx.judged:
            ctx.problem("scenario never judged its records")
        r.violations += len(r.problems)
        r.verdict = "PASS" if (r.lost == 0 and r.violations == 0 and
                               not r.lost_replies) else "FAIL"
    except Skip as e:
        ctx.res.verdict = "SKIP"
        ctx.note("skipped: %s" % e)
    except Exception:
        ctx.problem("exception:\n" + traceback.format_exc())
        ctx.res.violations += 1
        ctx.res.verdict = "FAIL"
    finally:
        if ctx.res.verdict == "FAIL":
            for d in ctx.daemons:
                sys.stderr.write(d.log_tail(40) + "\n")
        ctx.close()
    ctx.res.seconds = time.monotonic() - t0
    return ctx.res


COLUMNS = ("scenario", "injected", "processed", "lost", "lost replies",
           "duplicated", "violations", "verdict", "time")


def table(results):
    """The report: one row per scenario, then notes and problems."""
    rows = [COLUMNS]
    for r in results:
        rows.append((r.name, str(r.injected), str(r.processed), str(r.lost),
                     "-" if r.lost_replies is None else str(r.lost_replies),
                     str(r.duplicated), str(r.violations), r.verdict,
                     "%.0fs" % r.seconds))
    w = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    out = []
    for n, row in enumerate(rows):
        out.append("  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i])
                             for i, c in enumerate(row)))
        if n == 0:
            out.append("  ".join("-" * x for x in w))
    for r in results:
        for s in r.notes:
            out.append("%s: %s" % (r.name, s))
    for r in results:
        for s in r.problems:
            out.append("%s: PROBLEM: %s" % (r.name, s))
        if r.verdict == "FAIL" and r.summary:
            out.append("%s: records:\n  %s" % (r.name,
                                               r.summary.replace("\n",
                                                                 "\n  ")))
    return "\n".join(out)


def have_root_mount():
    """True if this process may mount a tmpfs."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    d = tempfile.mkdtemp(prefix="tgchaos-mnt-")
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k",
                            "tmpfs", d], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        if r.returncode != 0:
            return False
        subprocess.run(["umount", d], stderr=subprocess.DEVNULL)
        return True
    finally:
        os.rmdir(d)
