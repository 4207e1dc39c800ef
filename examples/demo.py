#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""tgrunner demo: the whole system on one machine.

Without a token: starts the fake Bot API server (tgrunner-fakeapi) on
loopback, tgrunnerd with the C echo workers, feeds in traffic from many
chats (one of them hot), shows `tgrunnerctl status` while it flows, the
replies the bot sent, and a per-chat check that no message was lost to a
session race.  With --race the same run is repeated with session_key = none
to show the race that session keys prevent.

With a token (TGRUNNER_TOKEN, or --token-file FILE): runs tgrunnerd with
the echo workers against the real Bot API until Ctrl-C.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lib"))


def write_conf(tmp, builddir, api_url, token_file, session_key="chat",
               workers=4, flood_control=True):
    echo_state = os.path.join(tmp, "echo-state")
    os.makedirs(echo_state, exist_ok=True)
    conf = os.path.join(tmp, "tgrunner.conf")
    with open(conf, "w") as f:
        f.write(f"""# written by examples/demo.py
api_url = {api_url}
token_file = {token_file}
state_dir = {tmp}/state
workers = {workers}
worker_command = env ECHO_STATE_DIR={echo_state} {builddir}/examples/echo-worker
session_key = {session_key}
poll_timeout = 10s
control_socket = {tmp}/control.sock
flood_control = {"yes" if flood_control else "no"}
""")
    return conf, echo_state


def start_daemon(builddir, conf, logpath):
    log = open(logpath, "w")
    return subprocess.Popen([os.path.join(builddir, "tgrunnerd"), "-c", conf],
                            stdout=log, stderr=subprocess.STDOUT)


def wait_for(pred, timeout, interval=0.1):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def ctl(builddir, tmp, *args):
    return subprocess.run([os.path.join(builddir, "tgrunnerctl"), "-s",
                           os.path.join(tmp, "control.sock")] + list(args),
                          capture_output=True, text=True).stdout


def fake_run(builddir, session_key, count, chats):
    from fakeapi import FakeApi

    tmp = tempfile.mkdtemp(prefix="tgrunner-demo.")
    try:
        with FakeApi(builddir=builddir) as fake:
            token_file = os.path.join(tmp, "token")
            with open(os.open(token_file, os.O_WRONLY | os.O_CREAT, 0o600),
                      "w") as f:
                f.write(fake.token + "\n")
            # the fake does not rate-limit: replies go out at full speed
            conf, echo_state = write_conf(tmp, builddir, fake.url, token_file,
                                          session_key, flood_control=False)
            logpath = os.path.join(tmp, "tgrunnerd.log")
            print(f"== fake Bot API on {fake.url}; tgrunnerd with 4 echo "
                  f"workers, session_key = {session_key}")
            daemon = start_daemon(builddir, conf, logpath)
            if not wait_for(lambda: "ready" in open(logpath).read(), 15):
                print(open(logpath).read())
                raise SystemExit("tgrunnerd did not become ready")
            print(f"== sending {count} messages from {chats} chats, 30% of "
                  f"them from one busy chat, at 400/s")
            first, last = fake.generate(count, chats, dist="hot",
                                        hot_share=0.3, rate=400, seed=7)
            t0 = time.time()
            shown = 0
            while True:
                sent = len(fake.calls(method="sendMessage"))
                if sent >= count or time.time() - t0 > 60:
                    break
                if time.time() - t0 > shown:
                    shown += 1
                    if shown in (1, 3):
                        print(f"\n$ tgrunnerctl status    "
                              f"(after {time.time() - t0:.1f} s)")
                        print(ctl(builddir, tmp, "status"))
                time.sleep(0.2)
            elapsed = time.time() - t0
            calls = fake.calls(method="sendMessage")
            print(f"== {len(calls)} replies in {elapsed:.1f} s; the first "
                  f"few:")
            for c in calls[:5]:
                p = c["params"]
                print(f"   chat {p['chat_id']}: {p['text']}")
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
            check_counters(fake, first, last, echo_state)
            print(f"\n(daemon log: {logpath} is removed with the demo's "
                  f"temp dir; rerun with --keep to keep it)")
    finally:
        if "--keep" not in sys.argv:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")


def check_counters(fake, first, last, echo_state):
    """The echo worker counts messages per chat in a file, read-modify-write.
    With session keys every count is exact; without, updates race."""
    per_chat = {}
    for c in fake.calls(method="sendMessage"):
        chat = c["params"]["chat_id"]
        per_chat[chat] = per_chat.get(chat, 0) + 1
    lost = 0
    for chat, n in sorted(per_chat.items()):
        try:
            with open(os.path.join(echo_state, str(chat))) as f:
                counted = int(f.read().strip() or 0)
        except (OSError, ValueError):
            counted = 0
        lost += max(0, n - counted)
    print(f"== per-chat counters: {len(per_chat)} chats, "
          f"{sum(per_chat.values())} messages, {lost} increments lost to "
          f"races {'(session keys at work)' if lost == 0 else ''}")


def real_run(builddir, token):
    tmp = tempfile.mkdtemp(prefix="tgrunner-demo.")
    token_file = os.path.join(tmp, "token")
    with open(os.open(token_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write(token.strip() + "\n")
    conf, _ = write_conf(tmp, builddir, "https://api.telegram.org",
                         token_file, workers=2)
    print("== tgrunnerd against the real Bot API: message your bot; "
          "Ctrl-C stops")
    daemon = subprocess.Popen([os.path.join(builddir, "tgrunnerd"), "-c",
                               conf])
    try:
        daemon.wait()
    except KeyboardInterrupt:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait()
    shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--builddir", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--token-file")
    ap.add_argument("--race", action="store_true",
                    help="also run without session keys to show the race")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--chats", type=int, default=50)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    builddir = os.path.abspath(args.builddir)
    os.environ["TG_BUILDDIR"] = builddir
    token = os.environ.get("TGRUNNER_TOKEN")
    if args.token_file:
        token = open(args.token_file).read()
    if token:
        real_run(builddir, token)
        return
    fake_run(builddir, "chat", args.count, args.chats)
    if args.race:
        print("\n== the same without session keys (session_key = none):")
        fake_run(builddir, "none", args.count, args.chats)


if __name__ == "__main__":
    main()
