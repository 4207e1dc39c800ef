#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""The conformance worker of the Python library: the text commands that
tests/conformance/tgrunner-conformance drives (echo, call, sleep, fail,
raise).  Slots from TG_SLOTS (default 1).

    tgrunner-conformance -- python3 examples/conformance.py
"""
import asyncio
import os

from tgrunner_worker import ApiError, Worker

w = Worker(slots=int(os.environ.get("TG_SLOTS", "1")), name="conformance.py")


@w.handler
async def on_update(ctx):
    text = ctx.text or ""
    if text.startswith("echo "):
        ctx.reply(text[5:])
    elif text == "call":
        try:
            me = await ctx.call("getMe")
        except ApiError as e:
            ctx.reply("error:%d" % e.error_code)
        else:
            ctx.reply("me:%s" % me["username"])
    elif text.startswith("sleep "):
        await asyncio.sleep(int(text[6:]) / 1000.0)
    elif text == "fail":
        ctx.fail("asked to fail", retry=False)
    elif text == "raise":
        raise RuntimeError("asked to raise")


if __name__ == "__main__":
    w.run()
