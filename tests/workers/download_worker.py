#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""A worker for tests/scenario/test_adapters.py: "dl <file_id> [max]"
downloads the file with ctx.download() and replies "<size> <sha256>";
"dlpath <file_id> <path>" writes it to path first.  Errors are replied
as "error <type>: <text>"."""

import hashlib
import sys

from tgrunner_worker import Worker

w = Worker(slots=4)


@w.handler
async def on_update(ctx):
    args = (ctx.text or "").split()
    try:
        if args[0] == "dl":
            mx = int(args[2]) if len(args) > 2 else None
            data = await ctx.download(args[1], max_size=mx)
        else:
            path = await ctx.download(args[1], path=args[2])
            with open(path, "rb") as f:
                data = f.read()
        ctx.reply("%d %s" % (len(data), hashlib.sha256(data).hexdigest()))
    except Exception as e:
        ctx.reply("error %s: %s" % (type(e).__name__, e))


if __name__ == "__main__":
    sys.exit(w.run())
