#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""A worker is untrusted (#12): what a buggy or hostile worker tries, and
what the daemon does about it.

- The method policy: getUpdates, setWebhook, deleteWebhook, logOut and close
  (in any case) never reach the Bot API for a worker, whether made as call
  frames or attached to done; the worker is answered 403 with the rule,
  each refusal is counted in /metrics and logged once per worker and
  method; worker_methods_allow / worker_methods_deny refuse the same way.
- A worker polling getUpdates in a loop takes no update from anyone.
- Fair queues: one worker flooding calls to its own chat does not stall the
  other chats (max_calls_per_key / max_calls_per_worker).
- The token: a worker of the daemon's own user cannot read the daemon's
  environment or memory (not dumpable); workers run as worker_user die
  with the daemon (the death signal survives the uid change); a token file
  others may read is warned about.
"""

import json
import os
import re
import resource
import shlex
import socket
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tgtest					# noqa: E402
import promparse				# noqa: E402
from tgtest import ScenarioCase, wait_until	# noqa: E402

# a Python that user nobody may run (the test's own may live in /root)
SYS_PYTHON = "/usr/bin/python3"
SDK = os.path.join(tgtest.SRCDIR, "worker-sdk", "python")
RESERVED = ("getUpdates", "setWebhook", "deleteWebhook", "logOut", "close")
MARK = "tgtest-untrusted"

# A worker that tries every reserved method in some spelling with call,
# attaches more of them to done, records what it was answered (one JSON line
# per call to TG_OUT) and replies "re <update id>".  TG_TRY: the methods
# (comma-separated) for call; TG_ATTACH: those for done.  TG_VIA=endpoint:
# TG_TRY's calls go through the daemon's Bot API endpoint (plain HTTP, the
# credential of TGRUNNER_API_TOKEN) instead of call frames.
POLICY_WORKER = r'''
import asyncio, json, os, urllib.error, urllib.request
from tgrunner_worker import ApiError, Worker

VIA_ENDPOINT = os.environ.get("TG_VIA") == "endpoint"

def endpoint_call(update_id, method, params):
    req = urllib.request.Request(
        "%%s/bot%%s/%%s" %% (os.environ["TGRUNNER_API_ROOT"],
                          os.environ["TGRUNNER_API_TOKEN"], method),
        data=json.dumps(params).encode(),
        headers={"Content-Type": "application/json",
                 "X-Tgrunner-Update": str(update_id)})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as e:
        body = json.loads(e.read())
    if body.get("ok"):
        return body["result"]
    p = body.get("parameters") or {}
    raise ApiError(body.get("error_code"), body.get("description"), p,
                   p.get("retry_after"), method)

async def call(ctx, method, **params):
    if VIA_ENDPOINT:
        return await asyncio.to_thread(endpoint_call, ctx.id, method, params)
    return await ctx.call(method, **params)

OUT = os.environ["TG_OUT"]
TRY = [m for m in os.environ.get("TG_TRY", "").split(",") if m]
ATTACH = [m for m in os.environ.get("TG_ATTACH", "").split(",") if m]
LOOP = os.environ.get("TG_POLL_LOOP") == "1"
w = Worker(slots=4)
looping = False

async def poll_loop():
    # what a hostile worker would do: poll as fast as the daemon lets it,
    # confirming what it takes (stolen updates are recorded)
    offset = 0
    while True:
        try:
            r = await w.call("getUpdates", mark="%(mark)s", offset=offset,
                             timeout=0)
            record({"loop": True, "code": 200})
            for u in r:
                record({"stolen": u["update_id"]})
                offset = u["update_id"] + 1
        except ApiError as e:
            record({"loop": True, "code": e.error_code})
        await asyncio.sleep(0.005)

def record(obj):
    with open(OUT, "a") as f:
        f.write(json.dumps(obj) + "\n")

FLOOD_CHAT = int(os.environ.get("TG_FLOOD_CHAT", "0"))
FLOOD_N = int(os.environ.get("TG_FLOOD_N", "0"))
pending = set()

async def flood_one(ctx, i):
    try:
        await ctx.call("sendMessage", chat_id=ctx.chat_id, text="flood %%d" %% i)
        record({"flood": "ok"})
    except ApiError as e:
        record({"flood": e.error_code, "retry_after": e.retry_after,
                "desc": e.description})

async def flood(ctx):
    # FLOOD_N calls to its own chat at once; answered when the refusals are
    # in, the rest left queued in the daemon
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(flood_one(ctx, i)) for i in range(FLOOD_N)]
    pending.update(tasks)
    for t in tasks:
        t.add_done_callback(pending.discard)
    for _ in range(1000):
        await asyncio.sleep(0.01)
        if sum(t.done() for t in tasks) >= FLOOD_N // 2:
            break
    ctx.reply("re %%d" %% ctx.id)

@w.handler
async def on_update(ctx):
    global looping
    if FLOOD_N and ctx.chat_id == FLOOD_CHAT:
        if os.environ.get("TG_FLOOD_DIE") and ctx.attempt == 1:
            for i in range(FLOOD_N):
                asyncio.get_running_loop().create_task(flood_one(ctx, i))
            await asyncio.sleep(1.0)
            record({"dying": True})
            os._exit(3)
        if os.environ.get("TG_FLOOD_DIE"):
            ctx.reply("re %%d" %% ctx.id)
            return
        return await flood(ctx)
    if LOOP and not looping:
        looping = True
        asyncio.get_running_loop().create_task(poll_loop())
    for m in TRY:
        params = {"mark": "%(mark)s", "chat_id": ctx.chat_id, "text": "x"}
        if m.lower() == "getupdates":
            params = {"mark": "%(mark)s", "offset": -1, "timeout": 0}
        try:
            r = await call(ctx, m, **params)
            record({"id": ctx.id, "method": m, "ok": True})
            if m.lower() == "getupdates" and r:
                # confirm what it took, as a hostile worker would
                await call(ctx, m, offset=r[-1]["update_id"] + 1, timeout=0)
        except ApiError as e:
            record({"id": ctx.id, "method": m, "ok": False,
                    "code": e.error_code, "desc": e.description})
    for m in ATTACH:
        ctx.add_call(m, mark="%(mark)s", chat_id=ctx.chat_id, text="x")
    ctx.reply("re %%d" %% ctx.id)

w.run()
''' % {"mark": MARK}


# Run by a worker before it execs the test worker: what can it read of the
# daemon (its parent)?  One line per source to TG_HUNT_OUT: "denied" or the
# number of times the canary was found.
HUNT = r'''
import os, re, sys
canary = os.environ["TG_HUNT_FOR"].encode()
p = os.getppid()
res = {}
for name in ("environ", "cmdline"):
    try:
        with open("/proc/%d/%s" % (p, name), "rb") as f:
            res[name] = f.read().count(canary)
    except OSError as e:
        res[name] = "denied"
try:
    found = 0
    with open("/proc/%d/maps" % p) as maps, \
            open("/proc/%d/mem" % p, "rb", 0) as mem:
        for line in maps:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) rw", line)
            if not m:
                continue
            lo, hi = int(m.group(1), 16), int(m.group(2), 16)
            try:
                mem.seek(lo)
                found += mem.read(min(hi - lo, 64 << 20)).count(canary)
            except OSError:
                pass
    res["mem"] = found
except OSError:
    res["mem"] = "denied"
# written whole, then renamed: the test reads it once it exists
tmp = os.environ["TG_HUNT_OUT"] + ".tmp"
with open(tmp, "w") as f:
    for k, v in sorted(res.items()):
        f.write("%s %s\n" % (k, v))
os.rename(tmp, os.environ["TG_HUNT_OUT"])
os.execv(sys.argv[1], sys.argv[1:])
'''


def py_command(script):
    return "env PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=%s %s %s" % (
        shlex.quote(SDK), shlex.quote(sys.executable), shlex.quote(script))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
                                timeout=10) as r:
        return promparse.parse(r.read().decode("utf-8"))


class Untrusted(ScenarioCase):

    def policy_daemon(self, fake, try_methods, attach=(), workers=2,
                      worker_env_extra=None, **kw):
        script = os.path.join(self.tmp, "policy_worker.py")
        with open(script, "w") as f:
            f.write(POLICY_WORKER)
        self.out = os.path.join(self.tmp, "answers.jsonl")
        self.port = free_port()
        return self.start_daemon(
            fake, workers=workers, worker_command=py_command(script),
            metrics_listen="127.0.0.1:%d" % self.port,
            worker_env={"TG_OUT": self.out, "TG_TRY": ",".join(try_methods),
                        "TG_ATTACH": ",".join(attach),
                        **(worker_env_extra or {})}, **kw)

    def answers(self):
        if not os.path.exists(self.out):
            return []
        with open(self.out) as f:
            # a line still being written is left for the next look
            return [json.loads(l) for l in f if l.endswith("\n")]

    def wait_replies(self, fake, ids, timeout=60):
        want = set("re %d" % i for i in ids)
        wait_until(lambda: want <= set(c["params"].get("text") for c in
                                       fake.calls("sendMessage")),
                   timeout, what="a reply to each of %d updates" % len(ids))

    def assertRefusedAnswers(self, n):
        """n answers reach the workers, each a 403 naming its reserved
        method as the daemon spells it."""
        wait_until(lambda: len(self.answers()) >= n, 30,
                   what="every call answered")
        answers = self.answers()
        self.assertEqual(len(answers), n)
        for a in answers:
            canon = [r for r in RESERVED if r.lower() == a["method"].lower()]
            self.assertFalse(a["ok"], a)
            self.assertEqual(a["code"], 403, a)
            self.assertEqual(a["desc"], "tgrunner: %s is reserved for the "
                             "daemon" % canon[0], a)

    def assertNothingForwarded(self, fake):
        leaked = [c for c in fake.calls() if
                  (c.get("params") or {}).get("mark") == MARK]
        self.assertEqual(leaked, [], "worker calls reached the Bot API")

    def test_reserved_methods_refused(self):
        """call frames and done.calls, any case: 403, nothing forwarded,
        counted per method, logged once per worker and method."""
        tried = ["getUpdates", "GETUPDATES", "setWebhook", "SetWebHook",
                 "deleteWebhook", "logOut", "LOGOUT", "close", "Close"]
        attach = ["setwebhook", "logout", "CLOSE", "getupdates"]
        fake = self.start_fake()
        d = self.policy_daemon(fake, tried, attach)
        ids = self.generate(fake, 20, 5)
        self.wait_replies(fake, ids)
        self.assertRefusedAnswers(len(ids) * len(tried))
        self.assertNothingForwarded(fake)
        # one reply each, nothing lost or doubled
        texts = [c["params"]["text"] for c in fake.calls("sendMessage")]
        self.assertEqual(sorted(texts), sorted("re %d" % i for i in ids))
        fams = scrape(self.port)
        per = {"getUpdates": 3, "setWebhook": 3, "deleteWebhook": 1,
               "logOut": 3, "close": 3}
        for m, n in per.items():
            self.assertEqual(promparse.value(
                fams, "tgrunner_worker_calls_refused_total",
                {"method": m, "rule": "reserved"}), n * len(ids), m)
        # logged once per worker and method, whatever the count
        lines = d.grep(r"call refused: tgrunner: .* is reserved")
        keys = [re.search(r"worker=(\d+) method=(\w+)", l).groups()
                for l in lines]
        self.assertEqual(len(keys), len(set(keys)), "\n".join(lines))
        self.assertLessEqual(len(lines), 2 * (len(tried) + len(attach)))
        self.assertGreaterEqual(len(lines), 5)
        # the refused attached calls were never owed: the outbox answered
        # only the replies, and the journal never held a reserved name
        answered = lambda: promparse.value(  # noqa
            scrape(self.port), "tgrunner_outbox_answered_total")
        wait_until(lambda: answered() >= len(ids), 30,
                   what="the replies' answers recorded")
        self.assertEqual(answered(), len(ids))
        self.assertEqual(d.stop(), 0, d.log_tail())
        with open(os.path.join(d.state_dir, "journal"), "rb") as f:
            journal = f.read().lower()
        for m in RESERVED[:4]:  # "close" could be in any text
            self.assertNotIn(m.lower().encode(), journal, m)

    def test_reserved_methods_refused_on_endpoint(self):
        """The Bot API endpoint is under the same policy as call frames:
        any case, 403 with the rule, nothing forwarded, counted per method,
        logged once per worker and method."""
        tried = ["getUpdates", "GETUPDATES", "setWebhook", "SetWebHook",
                 "deleteWebhook", "logOut", "LOGOUT", "close", "Close"]
        fake = self.start_fake()
        d = self.policy_daemon(fake, tried,
                               worker_env_extra={"TG_VIA": "endpoint"})
        ids = self.generate(fake, 10, 5)
        self.wait_replies(fake, ids)
        self.assertRefusedAnswers(len(ids) * len(tried))
        self.assertNothingForwarded(fake)
        fams = scrape(self.port)
        per = {"getUpdates": 2, "setWebhook": 2, "deleteWebhook": 1,
               "logOut": 2, "close": 2}
        for m, n in per.items():
            self.assertEqual(promparse.value(
                fams, "tgrunner_worker_calls_refused_total",
                {"method": m, "rule": "reserved"}), n * len(ids), m)
        # the endpoint saw them all (not refused before the policy)
        self.assertGreaterEqual(promparse.value(
            fams, "tgrunner_worker_api_requests_total"),
            len(ids) * len(tried))
        lines = d.grep(r"call refused: tgrunner: .* is reserved")
        keys = [re.search(r"worker=(\d+) method=(\w+)", l).groups()
                for l in lines]
        self.assertEqual(len(keys), len(set(keys)), "\n".join(lines))
        self.assertGreaterEqual(len(lines), 5)
        self.assertLessEqual(len(lines), 2 * len(tried))
        self.assertEqual(d.stop(), 0, d.log_tail())

    def test_getupdates_loop_loses_nothing(self):
        """A worker that polls getUpdates (and confirms what it gets) in a
        loop, while updates keep coming, takes none of them from anyone."""
        fake = self.start_fake()
        self.policy_daemon(fake, [], workers=2, poll_timeout="2s",
                           worker_env_extra={"TG_POLL_LOOP": "1"})
        ids = self.generate(fake, 1, 1)
        self.wait_replies(fake, ids)
        wait_until(lambda: any(a.get("loop") or "stolen" in a
                               for a in self.answers()), 20,
                   what="the worker's getUpdates loop running")
        ids += self.generate(fake, 60, 20, rate=40)
        stolen = lambda: [a for a in self.answers() if "stolen" in a]  # noqa
        wait_until(lambda: stolen() or len(fake.calls("sendMessage")) >=
                   len(ids), 90, what="replies")
        self.assertEqual(stolen(), [])
        self.wait_replies(fake, ids, 30)
        self.wait_confirmed(fake, max(ids))
        texts = [c["params"]["text"] for c in fake.calls("sendMessage")]
        self.assertEqual(sorted(texts), sorted("re %d" % i for i in ids))
        answers = self.answers()
        self.assertEqual([a for a in answers if "stolen" in a], [])
        self.assertEqual(set(a["code"] for a in answers), {403})
        self.assertNothingForwarded(fake)

    def test_call_flood_other_chats_flow(self):
        """One worker floods its own chat with call frames, flood control
        on: its key goes past max_calls_per_key (its calls beyond are
        answered 429 with retry_after, its next updates wait), and the other
        chats are dispatched and answered as usual."""
        fake = self.start_fake()
        flood_chat = 777
        d = self.policy_daemon(
            fake, [], workers=2, flood_control=True, api_max_queued=2000,
            max_calls_per_key=200, update_timeout="60s",
            worker_env_extra={"TG_FLOOD_CHAT": str(flood_chat),
                              "TG_FLOOD_N": "1500"})
        first = self.inject(fake, [{"message": {
            "message_id": 1, "date": 1700000000, "text": "flood",
            "chat": {"id": flood_chat, "type": "private"}}}])
        # the flood is on when its first calls reach the Bot API (its reply
        # waits behind them, in the key's order)
        wait_until(lambda: any(c["params"].get("text", "").startswith(
            "flood") for c in fake.calls("sendMessage")), 30,
            what="the flood under way")
        # the key waits; its next update is held, not lost
        later = self.inject(fake, [{"message": {
            "message_id": 2, "date": 1700000000, "text": "later",
            "chat": {"id": flood_chat, "type": "private"}}}])
        t0 = time.monotonic()
        ids = self.generate(fake, 100, 50)
        self.wait_replies(fake, ids, 40)
        took = time.monotonic() - t0
        sys.stderr.write("flood: 100 updates of 50 other chats answered in "
                         "%.1f s\n" % took)
        wait_until(lambda: sum(1 for a in self.answers() if
                               a.get("flood") == 429) >= 1290, 30,
                   what="the calls past the bound refused")
        floods = [a for a in self.answers() if "flood" in a]
        refused = [a for a in floods if a["flood"] == 429]
        self.assertGreaterEqual(len(refused), 1300 - 10)
        self.assertEqual(refused[0]["retry_after"], 5)
        self.assertIn("max_calls_per_key", refused[0]["desc"])
        # the bound is logged once per episode, not per refused call
        self.assertEqual(len(d.grep(r"calls queued, the most "
                                    r"max_calls_per_key allows")), 1)
        self.wait_confirmed(fake, max(ids))
        self.assertNotIn("re %d" % later[0], [c["params"]["text"] for c in
                                              fake.calls("sendMessage")])

    def test_dead_worker_calls_not_made_twice(self):
        """A worker queues calls for an update and dies before they go out:
        the update runs again, and the calls that had not gone out are
        dropped rather than made next to the retry's."""
        fake = self.start_fake()
        flood_chat = 778
        d = self.policy_daemon(
            fake, [], workers=1, flood_control=True, update_timeout="60s",
            worker_env_extra={"TG_FLOOD_CHAT": str(flood_chat),
                              "TG_FLOOD_N": "60", "TG_FLOOD_DIE": "1"})
        first = self.inject(fake, [{"message": {
            "message_id": 1, "date": 1700000000, "text": "flood",
            "chat": {"id": flood_chat, "type": "private"}}}])
        self.wait_replies(fake, first, 60)
        flood = [c for c in fake.calls("sendMessage")
                 if c["params"]["text"].startswith("flood")]
        # a private chat takes about one a second: a few went out at most
        self.assertLess(len(flood), 20, len(flood))
        self.assertTrue(d.grep(r"call dropped: its worker died"),
                        d.log_tail())
        fams = scrape(self.port)
        dropped = promparse.value(fams, "tgrunner_api_orphans_dropped_total")
        self.assertEqual(dropped + len(flood), 60, (dropped, len(flood)))
        time.sleep(2)
        self.assertEqual(len([c for c in fake.calls("sendMessage")
                              if c["params"]["text"].startswith("flood")]),
                         len(flood))

    def unprivileged_dir(self, name):
        """A daemon directory that nobody (65534) owns."""
        os.chmod(self.tmp, 0o755)
        path = self.subdir(name)
        os.chown(path, 65534, 65534)
        return path

    @unittest.skipUnless(os.geteuid() == 0 and os.path.exists(SYS_PYTHON),
                         "needs root (to run the daemon as nobody) and %s"
                         % SYS_PYTHON)
    def test_token_hunt_in_proc(self):
        """The daemon as under the unit (an unprivileged user, the token
        from $CREDENTIALS_DIRECTORY), a worker of the same user: the
        daemon's environment and memory are closed to it (the daemon is not
        dumpable once the token is read)."""
        fake = self.start_fake()
        creds = self.unprivileged_dir("creds")
        with open(os.path.join(creds, "token"), "w") as f:
            f.write(fake.token + "\n")
        os.chown(os.path.join(creds, "token"), 65534, 65534)
        os.chmod(os.path.join(creds, "token"), 0o400)
        secret = fake.token.split(":", 1)[1]
        ddir = self.unprivileged_dir("d")
        hunt = os.path.join(self.tmp, "hunt.py")
        with open(hunt, "w") as f:
            f.write(HUNT)
        os.chmod(hunt, 0o644)
        out = os.path.join(ddir, "hunt.txt")
        wrapper = os.path.join(self.tmp, "as-nobody")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 "
                    "--clear-groups %s \"$@\"\n"
                    % shlex.quote(tgtest.daemon_path()))
        os.chmod(wrapper, 0o755)
        real = tgtest.daemon_path
        tgtest.daemon_path = lambda: wrapper
        self.addCleanup(setattr, tgtest, "daemon_path", real)
        d = tgtest.Daemon(
            fake, ddir, start=False, workers=1, token_file=None,
            worker_command="%s %s %s" % (
                shlex.quote(SYS_PYTHON), shlex.quote(hunt),
                shlex.quote(tgtest.worker_path())),
            worker_env={"CREDENTIALS_DIRECTORY": creds, "TG_HUNT_OUT": out,
                        # a canary in the daemon's environment too
                        "TG_HUNT_FOR": secret, "TG_REPLY": "1"})
        self._daemons.append(d)
        self.addCleanup(self._no_sanitizer_reports, d)
        self.addCleanup(d.close)
        d.start()
        d.wait_ready()
        ids = self.generate(fake, 5, 2)
        self.wait_confirmed(fake, max(ids))
        wait_until(lambda: os.path.exists(out), 20, what="the hunt's report")
        with open(out) as f:
            res = dict(l.split() for l in f)
        self.assertEqual(res, {"cmdline": "0", "environ": "denied",
                               "mem": "denied"})

    @unittest.skipUnless(os.geteuid() == 0, "needs root (worker_user)")
    def test_pdeathsig_survives_worker_user(self):
        """Workers run as worker_user die with a SIGKILLed daemon: the death
        signal is set after the uid change, which clears it."""
        fake = self.start_fake()
        # workers that would not notice the daemon's socket closing
        d = self.start_daemon(fake, workers=2, worker_user="nobody",
                              worker_command="sleep 600",
                              hello_timeout="60s")
        wait_until(lambda: len(d.worker_pids("sleep")) == 2, 20,
                   what="two workers")
        pids = d.worker_pids("sleep")
        self.addCleanup(lambda: [os.kill(p, 9) for p in pids
                                 if not tgtest.pid_gone(p)])
        for pid in pids:
            with open("/proc/%d/status" % pid) as f:
                uid = re.search(r"^Uid:\s+(\d+)", f.read(), re.M).group(1)
            self.assertEqual(uid, "65534")
        d.kill(9)
        wait_until(lambda: all(tgtest.pid_gone(p) for p in pids), 10,
                   what="the workers dying with the daemon")

    def test_token_file_mode_warned(self):
        fake = self.start_fake()
        d = tgtest.Daemon(fake, self.subdir("d"), start=False)
        self._daemons.append(d)
        self.addCleanup(d.close)
        os.chmod(d.token_path, 0o644)
        d.start()
        d.wait_ready()
        d.wait_log(r"token file %s: mode 0644 lets its group or others read "
                   r"the bot token; chmod 600 it" % re.escape(d.token_path),
                   10)
        self.assertFalse(d.grep(fake.token.split(":")[1]))

    def test_nofile_raised_to_hard_limit(self):
        """Started with a low soft limit of descriptors, the daemon takes
        what the hard limit allows."""
        fake = self.start_fake()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        try:
            d = self.start_daemon(fake, workers=1)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        with open("/proc/%d/limits" % d.pid) as f:
            line = [l for l in f if l.startswith("Max open files")][0]
        got = line.split()[3:5]
        want = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
        self.assertEqual(got, [want, want], line)

    def test_allow_and_deny_lists(self):
        fake = self.start_fake()
        self.policy_daemon(fake, ["sendChatAction", "SENDPHOTO",
                                  "getMe"],
                           attach=["sendSticker", "sendPhoto"],
                           worker_methods_allow="sendMessage, sendPhoto "
                           "getme sendSticker",
                           worker_methods_deny="sendphoto")
        ids = self.generate(fake, 6, 3)
        self.wait_replies(fake, ids)
        wait_until(lambda: len(self.answers()) >= 3 * len(ids), 30,
                   what="every call answered")
        by = {}
        for a in self.answers():
            by.setdefault(a["method"], set()).add(
                (a["ok"], a.get("code"), a.get("desc")))
        self.assertEqual(by["sendChatAction"], {(
            False, 403, "tgrunner: sendChatAction is not in "
            "worker_methods_allow")})
        self.assertEqual(by["SENDPHOTO"], {(
            False, 403, "tgrunner: SENDPHOTO is refused by "
            "worker_methods_deny")})
        self.assertEqual(by["getMe"], {(True, None, None)})
        marked = [c["method"] for c in fake.calls()
                  if (c.get("params") or {}).get("mark") == MARK]
        # getMe and the attached sendSticker went out; no photo
        self.assertEqual(sorted(set(marked)), ["getMe", "sendSticker"])
        self.assertEqual(marked.count("sendSticker"), len(ids))
        fams = scrape(self.port)
        self.assertEqual(promparse.value(
            fams, "tgrunner_worker_calls_refused_total",
            {"method": "other", "rule": "worker_methods_allow"}), len(ids))
        self.assertEqual(promparse.value(
            fams, "tgrunner_worker_calls_refused_total",
            {"method": "other", "rule": "worker_methods_deny"}),
            2 * len(ids))


if __name__ == "__main__":
    tgtest.main()
