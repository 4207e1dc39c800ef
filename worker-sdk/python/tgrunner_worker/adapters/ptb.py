# SPDX-License-Identifier: ISC
"""python-telegram-bot 13 (Debian 12's python3-python-telegram-bot) as a
tgrunner worker.  The bot keeps its Updater, Dispatcher and handlers; two
lines change:

    from tgrunner_worker.adapters import ptb

    updater = Updater(**ptb.bot_args(), use_context=True)  # was: Updater(TOKEN, ...)
    ...                                                    # handlers, unchanged
    ptb.run(updater, slots=8)                 # was: start_polling(); idle()

Each update the daemon hands over becomes a telegram.Update and goes
through Dispatcher.process_update in a thread of a pool of `slots` threads
(PTB 13 is synchronous).  Handlers run as they do under start_polling,
run_async ones included: the update is answered once they have finished.

State PTB keeps in memory (ConversationHandler's conversations, user_data,
chat_data) lives in one worker process; the daemon hands the updates of a
chat to any of its workers, one at a time.  Run such a bot with workers = 1
and many slots, or keep the state in a persistence every worker shares.

Every request the bot makes while handling an update carries the
X-Tgrunner-Update header, so that the daemon orders the calls of one chat
as it orders call frames.  An exception in a handler goes to the
dispatcher's error handlers, as always, and the update is answered fail
(retry as configured) instead of done.
"""

import asyncio
import concurrent.futures
import logging
import threading

from .. import Fail, Worker
from . import endpoint

log = logging.getLogger("tgrunner_worker.ptb")

HEADER = "X-Tgrunner-Update"

_tl = threading.local()		# update_id, errors, promises of this thread


def bot_args():
    """Keyword arguments for telegram.ext.Updater (or telegram.Bot) that
    point it at the daemon's endpoint: token, base_url, base_file_url."""
    root, token = endpoint()
    return {"token": token, "base_url": root + "/bot",
            "base_file_url": root + "/file/bot"}


def _patch_request(bot):
    """Every request of the bot made for an update names it."""
    req = bot.request
    if getattr(req, "_tgrunner_patched", False):
        return
    orig = req._request_wrapper

    def wrapper(*args, **kwargs):
        uid = getattr(_tl, "update_id", None)
        if uid is not None:
            headers = dict(kwargs.get("headers") or {})
            headers[HEADER] = str(uid)
            kwargs["headers"] = headers
        return orig(*args, **kwargs)

    # PTB warns about attributes set the ordinary way
    object.__setattr__(req, "_request_wrapper", wrapper)
    object.__setattr__(req, "_tgrunner_patched", True)


def _patch_dispatcher(dp):
    """Handler errors and run_async promises are seen per update."""
    if getattr(dp, "_tgrunner_patched", False):
        return
    orig_error = dp.dispatch_error
    orig_async = dp.run_async

    def dispatch_error(update, error, promise=None):
        errors = getattr(_tl, "errors", None)
        if errors is not None and promise is None:
            errors.append(error)
        return orig_error(update, error, promise=promise)

    def run_async(func, *args, update=None, **kwargs):
        uid = getattr(_tl, "update_id", None)
        promises = getattr(_tl, "promises", None)
        if uid is None or func in dp.error_handlers:
            return orig_async(func, *args, update=update, **kwargs)

        def in_update(*a, **kw):
            _tl.update_id = uid
            try:
                return func(*a, **kw)
            finally:
                _tl.update_id = None

        in_update.__name__ = getattr(func, "__name__", "handler")
        p = orig_async(in_update, *args, update=update, **kwargs)
        if promises is not None:
            promises.append(p)
        return p

    object.__setattr__(dp, "dispatch_error", dispatch_error)
    object.__setattr__(dp, "run_async", run_async)
    object.__setattr__(dp, "_tgrunner_patched", True)


def _process(dp, update, uid, timeout):
    """In a pool thread: the update through the dispatcher, then its
    run_async handlers; the errors they raised."""
    from telegram.ext import DispatcherHandlerStop

    _tl.update_id = uid
    _tl.errors = []
    _tl.promises = []
    try:
        dp.process_update(update)
        for p in _tl.promises:
            if not p.done.wait(timeout):
                _tl.errors.append(TimeoutError("a run_async handler did not "
                                               "finish"))
            elif p.exception is not None and \
                    not isinstance(p.exception, DispatcherHandlerStop):
                _tl.errors.append(p.exception)
        return list(_tl.errors)
    finally:
        _tl.update_id = None
        _tl.errors = None
        _tl.promises = None


class PtbWorker:
    """The worker around a Dispatcher: Worker(slots) plus a thread pool."""

    def __init__(self, target, slots=8, retry=True, name=None, **worker_kw):
        self.target = target
        self.dp = None
        self.retry = retry
        self.slots = slots
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=slots, thread_name_prefix="ptb-update")
        self.worker = Worker(self._handle, slots=slots, name=name,
                             **worker_kw)
        self.worker.on_startup(self._startup)
        self.worker.on_shutdown(self._shutdown)

    def _startup(self, worker):
        target = self.target
        if callable(target) and not hasattr(target, "dispatcher") and \
                not hasattr(target, "process_update"):
            # built now, from the welcome: external workers too
            root, token = worker.api_root, worker.api_token
            if root is None:
                raise RuntimeError("the daemon serves no Bot API endpoint")
            target = target(token=token, base_url=root + "/bot",
                            base_file_url=root + "/file/bot")
        self.dp = getattr(target, "dispatcher", target)
        bot = self.dp.bot
        if worker.api_token is not None and bot.token != worker.api_token:
            log.warning("the bot's token is not this worker's api_token: "
                        "its calls bypass or miss the daemon's endpoint")
        _patch_request(bot)
        _patch_dispatcher(self.dp)
        if getattr(bot, "_bot", None) is None and worker.bot:
            # getMe as the welcome says, not one more call for it
            from telegram import User
            bot._bot = User.de_json(worker.bot, bot)
        self.updater = target if hasattr(target, "dispatcher") else None
        self._start_threads()

    def _start_threads(self):
        """What start_polling starts besides polling: the dispatcher's
        thread (its run_async pool lives there) and the job queue."""
        if not self.dp.running:
            ready = threading.Event()
            threading.Thread(target=self.dp.start, name="ptb-dispatcher",
                             kwargs={"ready": ready}, daemon=True).start()
            ready.wait()
        jq = getattr(self.updater, "job_queue", None)
        if jq is not None:
            jq.start()

    async def _handle(self, ctx):
        from telegram import Update

        update = Update.de_json(ctx.update, self.dp.bot)
        left = ctx.time_left()
        timeout = max(left, 1.0) if left is not None else None
        errors = await asyncio.get_running_loop().run_in_executor(
            self.pool, _process, self.dp, update, ctx.id, timeout)
        if errors:
            e = errors[0]
            raise Fail("%s: %s" % (type(e).__name__, e),
                       retry=getattr(e, "retry", self.retry))

    def _shutdown(self, worker):
        self.pool.shutdown(wait=True)
        if self.dp is not None:
            self.dp.stop()
        jq = getattr(self.updater, "job_queue", None)
        if jq is not None:
            jq.stop()

    def run(self):
        self.worker.run()


def run(target, slots=8, retry=True, name=None, **worker_kw):
    """Serve the daemon's updates with target until shutdown.

    target   an Updater or Dispatcher built on bot_args(), or a function
             (token=, base_url=, base_file_url=) -> Updater called after
             the welcome (for workers the daemon did not spawn)
    slots    updates handled at once, each in a thread of its own; PTB's
             connection pool should have as many (request_kwargs=
             {"con_pool_size": slots + 4})
    retry    whether an update whose handler raised is tried again later
             (an exception's own `retry` attribute wins)
    Other keyword arguments go to Worker (trace=...)."""
    PtbWorker(target, slots, retry, name, **worker_kw).run()
