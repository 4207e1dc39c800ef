# SPDX-License-Identifier: ISC
"""Run bots written for a Bot API framework as tgrunner workers, unchanged.

The bot talks to the daemon's Bot API endpoint (tgrunner-protocol(7), "The
Bot API endpoint") with its own HTTP client, with a per-worker credential
instead of the bot token; the adapter feeds it the updates the daemon hands
to the worker and answers each with done, or fail when a handler raised.

    tgrunner_worker.adapters.ptb    python-telegram-bot 13 (Debian 12)

aiogram 3 needs no adapter module: see the README's example.
"""

import os


def endpoint():
    """(api_root, api_token) of this worker's endpoint, from the
    environment the daemon gives the workers it spawns
    ($TGRUNNER_API_ROOT, $TGRUNNER_API_TOKEN).  Raises RuntimeError when
    they are not set (the daemon serves no endpoint, or the worker was
    not spawned by it: then build the bot after the welcome instead)."""
    root = os.environ.get("TGRUNNER_API_ROOT")
    token = os.environ.get("TGRUNNER_API_TOKEN")
    if not root or not token:
        raise RuntimeError("TGRUNNER_API_ROOT and TGRUNNER_API_TOKEN are not "
                           "set: run this bot as a worker of tgrunnerd "
                           "(worker_command), with worker_api_listen on")
    return root, token
