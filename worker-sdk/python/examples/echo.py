#!/usr/bin/env python3
"""echo: a tgrunner worker that replies to every text message with its
text.  Many updates at once (ECHO_SLOTS, default 50) on asyncio.

    worker_command = python3 /path/to/echo.py      (in tgrunner.conf)
"""
import os

from tgrunner_worker import Worker

w = Worker(slots=int(os.environ.get("ECHO_SLOTS", "50")), name="echo.py")


@w.handler
async def on_update(ctx):
    if ctx.text is not None:
        ctx.reply(ctx.text)


if __name__ == "__main__":
    w.run()
