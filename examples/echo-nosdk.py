#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""echo-nosdk: a tgrunner worker in plain Python, no SDK, no dependencies.

It speaks the protocol of tgrunner-protocol(7) directly, to show that any
language with a line reader and a JSON library can be a worker.  It takes
many updates at once (ECHO_SLOTS, default 16) with asyncio, and answers each
with a done frame carrying a sendMessage call.  Run by tgrunnerd
(worker_command = /path/to/echo-nosdk.py: the socket is fd 3, TGRUNNER_FD=3)
or started by hand against the daemon's listen socket (TGRUNNER_SOCKET=PATH).
"""
import asyncio
import json
import os
import socket
import sys

MAX_FRAME = 1024 * 1024          # bytes, newline included (welcome says it too)


def connect():
    if os.environ.get("TGRUNNER_FD"):
        return socket.socket(fileno=int(os.environ["TGRUNNER_FD"]))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.environ["TGRUNNER_SOCKET"])
    return sock


def frame(obj):
    # Compact JSON never contains a raw newline: strings escape it.
    line = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    data = line.encode() + b"\n"
    if len(data) > MAX_FRAME:
        raise ValueError("frame too large")
    return data


async def handle(writer, lock, msg):
    update = msg["update"]
    body = update.get("message") or update.get("edited_message") or {}
    await asyncio.sleep(0.01)    # pretend to work; others run meanwhile
    calls = []
    if "text" in body:
        calls.append({"method": "sendMessage",
                      "params": {"chat_id": body["chat"]["id"],
                                 "text": "echo: " + body["text"]}})
    async with lock:             # one frame at a time on the socket
        writer.write(frame({"type": "done", "id": msg["id"], "calls": calls}))
        await writer.drain()


async def main():
    slots = int(os.environ.get("ECHO_SLOTS", "16"))
    reader, writer = await asyncio.open_unix_connection(sock=connect(),
                                                        limit=MAX_FRAME)
    writer.write(frame({"type": "hello", "protocol": 1, "slots": slots,
                        "name": "echo-nosdk.py"}))
    welcome = json.loads(await reader.readline())
    if welcome.get("type") != "welcome":
        sys.exit("echo-nosdk: no welcome")
    print("echo-nosdk: worker %d for @%s" % (welcome["worker_id"],
          welcome["bot"].get("username", "?")), file=sys.stderr)
    lock, tasks = asyncio.Lock(), {}
    while True:
        line = await reader.readline()
        if not line:                      # daemon closed: we are done
            break
        msg = json.loads(line)
        kind = msg["type"]
        if kind == "update":
            task = asyncio.create_task(handle(writer, lock, msg))
            tasks[msg["id"]] = task
            task.add_done_callback(lambda t, i=msg["id"]: tasks.pop(i, None))
        elif kind == "cancel" and msg["id"] in tasks:
            tasks.pop(msg["id"]).cancel()
            async with lock:
                writer.write(frame({"type": "fail", "id": msg["id"],
                                    "error": "cancelled", "retry": True}))
        elif kind == "shutdown":
            break
        # "result" answers calls we never make; unknown members are ignored
    await asyncio.gather(*tasks.values(), return_exceptions=True)
    writer.close()


if __name__ == "__main__":
    asyncio.run(main())
