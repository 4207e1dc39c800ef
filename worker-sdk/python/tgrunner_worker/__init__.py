# SPDX-License-Identifier: ISC
"""tgrunner_worker: write tgrunner workers in Python (asyncio, many slots).

    from tgrunner_worker import Worker

    w = Worker(slots=50)

    @w.handler
    async def on_update(ctx):
        if ctx.text is not None:
            ctx.reply(ctx.text)

    w.run()

See README.md and tgrunner-protocol(7) (proto/PROTOCOL.md).
"""

from ._frames import PROTOCOL, FrameTooLarge, ProtocolError
from ._upload import upload_bytes, upload_file
from ._worker import ApiError, Context, Fail, Worker

__version__ = "0.1.0"
__all__ = ["Worker", "Context", "ApiError", "Fail", "FrameTooLarge",
           "ProtocolError", "PROTOCOL", "upload_file", "upload_bytes",
           "__version__"]
