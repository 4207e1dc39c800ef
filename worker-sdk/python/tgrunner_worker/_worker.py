# SPDX-License-Identifier: ISC
"""The asyncio worker: one connection to tgrunnerd, many handler tasks."""

import asyncio
import inspect
import logging
import os
import socket
import sys
import time
import traceback

from ._download import endpoint_from, fetch_file
from ._frames import (MAX_CALLS, MAX_NAME, MAX_SLOTS, PROTO_MAX_FRAME,
                      PROTOCOL, FrameTooLarge, ProtocolError, check_method,
                      decode, dumps, encode)

log = logging.getLogger("tgrunner_worker")

CLEANUP_GRACE = 1.0	# s for cancelled handlers to unwind before exit
MAX_ERROR = 1024	# characters of a fail's error kept

# Update members that carry a Message.
_MESSAGE_KINDS = ("message", "edited_message", "channel_post",
                  "edited_channel_post", "business_message",
                  "edited_business_message")
# Update members whose object has a "chat" (and no message).
_CHAT_KINDS = ("my_chat_member", "chat_member", "chat_join_request",
               "message_reaction", "message_reaction_count", "chat_boost",
               "removed_chat_boost")


class ApiError(Exception):
    """A Bot API call made with call() failed.  error_code and
    description are the Bot API's; parameters its ResponseParameters
    (a dict, possibly empty); retry_after the seconds to wait on 429, or
    None."""

    def __init__(self, error_code, description, parameters=None,
                 retry_after=None, method=None):
        super().__init__("%s failed: %s %s" % (method or "call", error_code,
                                               description))
        self.error_code = error_code
        self.description = description
        self.parameters = parameters or {}
        self.retry_after = retry_after
        self.method = method


class Fail(Exception):
    """Raise it in a handler to answer fail with this error.  retry=True
    asks the daemon to run the update again later (attempt + 1)."""

    def __init__(self, error, retry=False):
        super().__init__(error)
        self.error = str(error)
        self.retry = bool(retry)


def _clean_error(error):
    """An error text that is safe in a frame: no NUL, no lone surrogates,
    at most MAX_ERROR characters."""
    s = str(error).replace("\0", "\\0")
    s = s.encode("utf-8", "replace").decode("utf-8")
    return s if len(s) <= MAX_ERROR else s[:MAX_ERROR - 3] + "..."


class Context:
    """One update being handled.  Handlers get it as their argument.

    id        the update's id (its update_id)
    update    the Telegram Update object (a dict)
    keys      its session keys (list of str, e.g. ["chat:42"])
    attempt   1 on first delivery, > 1 when delivered again
    deadline  Unix time (float seconds) after which the daemon cancels
              the update, or None
    worker    the Worker; bot is worker.bot
    answered  True once done or fail was sent
    """

    def __init__(self, worker, frame):
        self.worker = worker
        self.frame = frame
        self.id = frame["id"]
        self.update = frame["update"]
        self.keys = frame["keys"]
        self.attempt = frame["attempt"]
        d = frame["deadline"]
        self.deadline = d / 1000.0 if d else None
        self.answered = False
        self.task = None
        self._calls = []	# encoded call objects (bytes)
        self._size = len(b'{"type":"done","id":%d,"calls":[]}\n' % self.id)

    def __repr__(self):
        return "<Context id=%d attempt=%d keys=%r%s>" % (
            self.id, self.attempt, self.keys,
            " answered" if self.answered else "")

    # -- what the update says ----------------------------------------------

    @property
    def bot(self):
        return self.worker.bot

    @property
    def type(self):
        """The update's kind: "message", "callback_query", ... (None if
        it has no member besides update_id)."""
        for k in self.update:
            if k != "update_id":
                return k
        return None

    @property
    def message(self):
        """The Message the update carries (message, edited_message,
        channel_post, business_message, their edited_ forms, or a
        callback_query's message), or None."""
        u = self.update
        for k in _MESSAGE_KINDS:
            m = u.get(k)
            if isinstance(m, dict):
                return m
        cq = u.get("callback_query")
        if isinstance(cq, dict) and isinstance(cq.get("message"), dict):
            return cq["message"]
        return None

    @property
    def chat_id(self):
        """The id of the chat the update belongs to, or None."""
        m = self.message
        if m is None:
            for k in _CHAT_KINDS:
                if isinstance(self.update.get(k), dict):
                    m = self.update[k]
                    break
        chat = m.get("chat") if m is not None else None
        return chat.get("id") if isinstance(chat, dict) else None

    @property
    def text(self):
        """The message's text, or None (captions are not text)."""
        m = self.message
        t = m.get("text") if m is not None else None
        return t if isinstance(t, str) else None

    @property
    def from_user(self):
        """The User who caused the update (message.from,
        callback_query.from, inline_query.from, poll_answer.user, ...),
        or None."""
        obj = self.update.get(self.type) if self.type else None
        if not isinstance(obj, dict):
            return None
        u = obj.get("from", obj.get("user"))
        return u if isinstance(u, dict) else None

    def time_left(self):
        """Seconds until the deadline (may be negative), or None."""
        if self.deadline is None:
            return None
        return self.deadline - time.time()

    # -- the answer --------------------------------------------------------

    def add_call(self, method, /, **params):
        """Attach a Bot API call to the done this update will be answered
        with: it runs after the update is marked done, in order.  params
        are copied now.  Raises ValueError for a bad method name, more than
        100 calls, or parameters JSON cannot carry, FrameTooLarge when the
        done would exceed max_frame."""
        if self.answered:
            raise RuntimeError("update %d was already answered" % self.id)
        check_method(method)
        if len(self._calls) >= MAX_CALLS:
            raise ValueError("at most %d calls in one done" % MAX_CALLS)
        c = dumps({"method": method, "params": params}).encode("utf-8")
        size = self._size + len(c) + (1 if self._calls else 0)
        if size > self.worker.max_frame:
            raise FrameTooLarge("done for update %d would be %d bytes, "
                                "max_frame is %d" % (self.id, size,
                                                     self.worker.max_frame))
        self._calls.append(c)
        self._size = size

    def reply(self, text, /, **params):
        """add_call("sendMessage") to the update's chat.  Replies in the
        same forum topic and business connection as the message.  params
        add to or override chat_id and text."""
        chat_id = self.chat_id
        if chat_id is None:
            raise ValueError("update %d has no chat to reply to" % self.id)
        p = {"chat_id": chat_id, "text": text}
        m = self.message or {}
        if m.get("is_topic_message") and "message_thread_id" in m:
            p["message_thread_id"] = m["message_thread_id"]
        if "business_connection_id" in m:
            p["business_connection_id"] = m["business_connection_id"]
        p.update(params)
        self.add_call("sendMessage", **p)

    def fail(self, error, retry=False):
        """Answer fail now (the handler should return afterwards).
        retry=True: run the update again later with attempt + 1; False:
        record it as dead now.  Calls added before are dropped."""
        if self.answered:
            raise RuntimeError("update %d was already answered" % self.id)
        self._answer_fail(error, retry)

    async def call(self, method, /, **params):
        """Run a Bot API method now, through the daemon; return its
        result.  Raises ApiError when the Bot API answers an error."""
        if self.answered:
            raise RuntimeError("update %d was already answered; use "
                               "worker.call() for calls after it" % self.id)
        return await self.worker._call(self.id, method, params)

    async def download(self, file_id, path=None, max_size=None):
        """The file of file_id (a photo's, a document's), through the
        daemon: its bytes, or with path, written there (path returned).
        max_size bounds it (ValueError beyond; the daemon's own bound is
        download_max_size).  Raises ApiError for the Bot API's errors
        (e.g. an unknown file_id), RuntimeError when the daemon serves no
        Bot API endpoint."""
        return await self.worker._download(0 if self.answered else self.id,
                                           file_id, path, max_size)

    def _answer_done(self):
        data = b'{"type":"done","id":%d' % self.id
        if self._calls:
            data += b',"calls":[' + b",".join(self._calls) + b"]"
        self.worker._answer(self, data + b"}\n")

    def _answer_fail(self, error, retry):
        f = {"type": "fail", "id": self.id, "error": _clean_error(error),
             "retry": bool(retry)}
        for cut in (None, 16, 0):	# a tiny max_frame: the error gives way
            if cut is not None:
                f["error"] = f["error"][:cut]
            try:
                data = encode(f, self.worker.max_frame)
                break
            except FrameTooLarge:
                if cut == 0:
                    raise
        self.worker._answer(self, data)


async def _maybe_await(value):
    if inspect.isawaitable(value):
        return await value
    return value


class _Conn(asyncio.Protocol):
    """The socket to the daemon: splits lines, decodes frames and hands
    them to the Worker; serialises writes (each frame is one write)."""

    def __init__(self, worker):
        self.w = worker
        worker._conn = self	# frames may arrive before serve() resumes
        self.t = None
        self.buf = bytearray()
        self.scan = 0		# where the search for a newline resumes
        self.limit = PROTO_MAX_FRAME
        self.hold = False	# keep frames buffered (startup hooks run)
        self.closing = False
        self.paused = False
        self.waiters = []
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.t = transport

    def data_received(self, data):
        self.buf += data
        self.process()

    def process(self):
        buf, pos = self.buf, 0
        try:
            while not self.hold and not self.closing:
                i = buf.find(b"\n", max(pos, self.scan))
                if i < 0:
                    break
                if i + 1 - pos > self.limit:
                    raise ProtocolError("frame longer than %d bytes"
                                        % self.limit)
                line = bytes(buf[pos:i])
                pos = i + 1
                if self.w.trace is not None:
                    self.w.trace("<", line)
                self.w._on_frame(decode(line))
        except ProtocolError as e:
            self.w._fatal(e)
            return
        except Exception as e:
            log.exception("internal error on a frame from the daemon")
            self.w._fatal(e)
            return
        del buf[:pos]
        if self.hold:
            self.scan = 0
        else:
            self.scan = len(buf)
            if len(buf) >= self.limit:
                self.w._fatal(ProtocolError("frame longer than %d bytes"
                                            % self.limit))

    def release(self):
        self.hold = False
        self.process()

    def eof_received(self):
        self.w._lost(None)
        return False

    def connection_lost(self, exc):
        self.closing = True
        if not self.lost.done():
            self.lost.set_result(exc)
        self._wake(ConnectionError("connection to the daemon lost"))
        self.w._lost(exc)

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        self._wake(None)

    def _wake(self, exc):
        ws, self.waiters = self.waiters, []
        for f in ws:
            if not f.done():
                if exc is None:
                    f.set_result(None)
                else:
                    f.set_exception(exc)

    async def drain(self):
        if self.closing:
            raise ConnectionError("connection to the daemon closed")
        if self.paused:
            f = asyncio.get_running_loop().create_future()
            self.waiters.append(f)
            await f

    def send(self, data):
        if self.closing or self.t is None or self.t.is_closing():
            return False
        if self.w.trace is not None:
            self.w.trace(">", data[:-1])
        self.t.write(data)
        return True

    def close(self):
        self.closing = True
        if self.t is not None:
            self.t.close()


class Worker:
    """A tgrunner worker: connects to the daemon, says hello with `slots`,
    and runs the handler as an asyncio task for every update, up to
    `slots` at once.

    handler   async def handler(ctx): ... (or register with @worker.handler)
    slots     updates handled at once (1..1024, default 1 as in the C
              and Node.js libraries)
    name      shown by the daemon in logs and status (default: the
              program's name)
    trace     optional callable(direction, line): sees every frame, ">"
              sent and "<" received (line is bytes without the newline)

    After the welcome: bot (the bot's getMe User, a dict), worker_id,
    max_frame, and api_root / api_token: the daemon's Bot API endpoint
    for this worker and its credential (from the welcome, else from
    $TGRUNNER_API_ROOT / $TGRUNNER_API_TOKEN), or None.
    """

    def __init__(self, handler=None, *, slots=1, name=None, trace=None):
        if type(slots) is not int or not 1 <= slots <= MAX_SLOTS:
            raise ValueError("slots must be an integer in 1..%d" % MAX_SLOTS)
        if name is None:
            name = os.path.basename(sys.argv[0] or "") or "python"
        name = str(name).encode("utf-8", "replace")[:MAX_NAME]
        self.name = name.decode("utf-8", "ignore")
        self.slots = slots
        self.trace = trace
        self._handler = handler
        self._startup = []
        self._cleanup = []
        self.bot = None
        self.worker_id = None
        self.max_frame = PROTO_MAX_FRAME
        self.welcome = None
        self.api_root = None
        self.api_token = None
        self._conn = None

    # -- registration ------------------------------------------------------

    def handler(self, fn):
        """Decorator: the function that handles every update."""
        self._handler = fn
        return fn

    def on_startup(self, fn):
        """Decorator: fn(worker) runs (awaited if async) after the
        welcome, before the first update is handled."""
        self._startup.append(fn)
        return fn

    def on_shutdown(self, fn):
        """Decorator: fn(worker) runs (awaited if async) after the last
        update was answered, before the worker exits."""
        self._cleanup.append(fn)
        return fn

    # -- running -----------------------------------------------------------

    def run(self, sock=None):
        """Serve until the daemon says shutdown or goes away, then return.
        Connects to fd $TGRUNNER_FD or the socket path $TGRUNNER_SOCKET
        unless a connected socket is given.  Logs to stderr (unless logging
        is configured) and exits with status 1 on a protocol error, a
        refused hello or a broken connection."""
        _default_logging()
        loop = asyncio.new_event_loop()
        code = 0
        try:
            loop.run_until_complete(self.serve(sock))
        except ProtocolError as e:
            log.error("malformed input from the daemon: %s; exiting", e)
            code = 1
        except OSError as e:
            log.error("%s; exiting", e)
            code = 1
        except KeyboardInterrupt:
            code = 130
        finally:
            stuck = _close_loop(loop)
        if stuck:
            log.error("%d handler task(s) ignore cancellation; exiting "
                      "anyway", stuck)
            sys.stderr.flush()
            os._exit(code or 1)
        if code:
            sys.exit(code)

    async def serve(self, sock=None):
        """The coroutine behind run(): returns after shutdown or EOF,
        raises ProtocolError on malformed input and OSError when the
        connection fails."""
        if self._handler is None:
            raise RuntimeError("no handler: register one with "
                               "@worker.handler")
        loop = asyncio.get_running_loop()
        if sock is None:
            sock = _connect_from_env()
        sock.setblocking(False)
        self._loop = loop
        self._jobs = {}		# id -> Context, not answered yet
        self._tasks = set()	# handler tasks still running
        self._calls = {}	# ref -> future of the result frame
        self._ref = 0
        self._shutdown = False
        self._timer = None
        self._unknown = set()
        self._welcomed = loop.create_future()
        self._finished = loop.create_future()
        if sock.family == socket.AF_UNIX:
            _, conn = await loop.create_unix_connection(
                lambda: _Conn(self), sock=sock)
        else:
            _, conn = await loop.create_connection(lambda: _Conn(self),
                                                   sock=sock)
        try:
            conn.send(encode({"type": "hello", "protocol": PROTOCOL,
                              "slots": self.slots, "name": self.name},
                             PROTO_MAX_FRAME))
            await self._welcomed
            log.debug("worker %d for @%s, %d slot(s)", self.worker_id,
                      self.bot.get("username", "?"), self.slots)
            for fn in self._startup:
                await _maybe_await(fn(self))
            conn.release()
            why = await self._finished
            log.debug("finished: %s", why)
        finally:
            await self._close()

    async def call(self, method, /, **params):
        """A Bot API call that belongs to no update (id 0): for startup
        hooks and work after an update was answered.  Calls of an update
        should use ctx.call(), which keeps their order per session key."""
        return await self._call(0, method, params)

    async def download(self, file_id, path=None, max_size=None):
        """ctx.download() outside an update."""
        return await self._download(0, file_id, path, max_size)

    async def _download(self, job_id, file_id, path, max_size):
        if self.api_root is None:
            raise RuntimeError("the daemon serves no Bot API endpoint "
                               "(worker_api_listen is off)")
        f = await self._call(job_id, "getFile", {"file_id": file_id})
        if not isinstance(f, dict) or not isinstance(f.get("file_path"),
                                                     str):
            raise ApiError(400, "getFile answered no file_path", None, None,
                           "getFile")
        return await fetch_file(self.api_root, self.api_token,
                                f["file_path"], path, max_size)

    # -- internals ---------------------------------------------------------

    async def _call(self, job_id, method, params):
        check_method(method)
        conn = self._conn
        if conn is None or conn.closing:
            raise ConnectionError("not connected to the daemon")
        self._ref += 1
        ref = self._ref
        data = encode({"type": "call", "id": job_id, "ref": ref,
                       "method": method, "params": params}, self.max_frame)
        fut = self._loop.create_future()
        self._calls[ref] = fut
        try:
            conn.send(data)
            await conn.drain()
            msg = await fut
        finally:
            self._calls.pop(ref, None)
        if msg["ok"]:
            return msg.get("result")
        raise ApiError(msg["error_code"], msg.get("description", ""),
                       msg.get("parameters"), msg.get("retry_after"),
                       method)

    def _on_frame(self, msg):
        kind = msg["type"]
        if self.welcome is None:
            if kind == "welcome":
                self._on_welcome(msg)
            elif kind in ("update", "result", "cancel", "shutdown"):
                raise ProtocolError("%s frame before welcome" % kind)
            return
        if kind == "update":
            self._on_update(msg)
        elif kind == "result":
            fut = self._calls.pop(msg["ref"], None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif kind == "cancel":
            ctx = self._jobs.get(msg["id"])
            if ctx is not None:	# else it crossed our answer: ignore
                log.warning("update %d cancelled by the daemon (%s)",
                            ctx.id, msg.get("reason", "no reason given"))
                self._cancel(ctx)
        elif kind == "shutdown":
            self._on_shutdown(msg)
        elif kind == "welcome":
            raise ProtocolError("second welcome")
        elif kind not in self._unknown:
            self._unknown.add(kind)
            log.debug("ignoring frames of unknown type %r", kind)

    def _on_welcome(self, msg):
        if msg["protocol"] != PROTOCOL:
            raise ProtocolError("welcome for protocol %d, this library "
                                "speaks %d" % (msg["protocol"], PROTOCOL))
        self.welcome = msg
        self.bot = msg["bot"]
        self.worker_id = msg["worker_id"]
        self.max_frame = msg["max_frame"]
        self.api_root, self.api_token = endpoint_from(msg)
        self._conn.hold = True
        self._welcomed.set_result(msg)

    def _on_update(self, msg):
        uid = msg["id"]
        if uid in self._jobs:
            raise ProtocolError("update %d sent twice" % uid)
        if len(self._jobs) >= self.slots:
            raise ProtocolError("update %d is more than our %d slot(s)"
                                % (uid, self.slots))
        if self._shutdown:
            log.warning("update %d after shutdown: handling it", uid)
        ctx = Context(self, msg)
        self._jobs[uid] = ctx
        ctx.task = self._loop.create_task(self._run_handler(ctx))
        self._tasks.add(ctx.task)
        ctx.task.add_done_callback(self._tasks.discard)

    async def _run_handler(self, ctx):
        try:
            await _maybe_await(self._handler(ctx))
        except asyncio.CancelledError:
            if not ctx.answered:
                ctx._answer_fail("cancelled", True)
        except Fail as e:
            if not ctx.answered:
                ctx._answer_fail(e.error, e.retry)
            else:
                log.warning("update %d: Fail(%r) after it was answered",
                            ctx.id, e.error)
        except FrameTooLarge as e:
            # the same answer would be built again: no retry (PROTOCOL.md 5)
            log.error("update %d: %s", ctx.id, e)
            if not ctx.answered:
                ctx._answer_fail("%s: %s" % (type(e).__name__, e), False)
        except Exception as e:
            log.error("update %d: the handler raised:\n%s", ctx.id,
                      traceback.format_exc().rstrip())
            if not ctx.answered:
                ctx._answer_fail("%s: %s" % (type(e).__name__, e), True)
        else:
            if not ctx.answered:
                ctx._answer_done()

    def _answer(self, ctx, data):
        ctx.answered = True
        self._jobs.pop(ctx.id, None)
        self._conn.send(data)
        if self._shutdown and not self._jobs:
            self._finish("shutdown")

    def _cancel(self, ctx):
        """Answer fail "cancelled" now and cancel the handler's task."""
        if not ctx.answered:
            ctx._answer_fail("cancelled", True)
        if ctx.task is not None:
            ctx.task.cancel()

    def _on_shutdown(self, msg):
        if self._shutdown:
            return
        self._shutdown = True
        deadline = msg.get("deadline") or 0
        log.debug("shutdown: finishing %d update(s)", len(self._jobs))
        if deadline:
            left = deadline / 1000.0 - time.time()
            margin = min(0.5, max(left, 0.0) * 0.25)
            self._timer = self._loop.call_later(max(0.0, left - margin),
                                                self._shutdown_deadline)
        if not self._jobs:
            self._finish("shutdown")

    def _shutdown_deadline(self):
        self._timer = None
        if self._jobs:
            log.warning("shutdown deadline: cancelling %d update(s)",
                        len(self._jobs))
        for ctx in list(self._jobs.values()):
            self._cancel(ctx)

    def _finish(self, why):
        if not self._finished.done():
            self._finished.set_result(why)

    def _fatal(self, exc):
        """Malformed input: stop reading and writing, fail serve()."""
        self._conn.closing = True	# no answer goes out after this
        for f in (self._welcomed, self._finished):
            if not f.done():
                f.set_exception(exc)
        self._conn.close()

    def _lost(self, exc):
        """EOF or a broken connection."""
        if not self._welcomed.done():
            self._welcomed.set_exception(ConnectionError(
                "the daemon closed the connection before welcome (is "
                "protocol %d supported?)" % PROTOCOL))
        if not self._finished.done():
            log.info("the daemon closed the connection")
            self._finish("eof")
        for f in list(self._calls.values()):
            if not f.done():
                f.set_exception(ConnectionError("connection to the daemon "
                                                "lost"))

    async def _close(self):
        if self._timer is not None:
            self._timer.cancel()
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CLEANUP_GRACE)
        for fn in self._cleanup:
            try:
                await _maybe_await(fn(self))
            except Exception:
                log.exception("on_shutdown hook failed")
        conn = self._conn
        conn.close()
        try:
            await asyncio.wait_for(asyncio.shield(conn.lost), 2.0)
        except asyncio.TimeoutError:
            pass


def _connect_from_env():
    fd = os.environ.get("TGRUNNER_FD")
    if fd:
        try:
            return socket.socket(fileno=int(fd))
        except ValueError:
            raise OSError("TGRUNNER_FD=%r is not a file descriptor"
                          % fd) from None
    path = os.environ.get("TGRUNNER_SOCKET")
    if path:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
        except OSError as e:
            s.close()
            raise OSError("cannot connect to %s: %s" % (path, e)) from None
        return s
    raise OSError("neither TGRUNNER_FD nor TGRUNNER_SOCKET is set: run this "
                  "worker from tgrunnerd (worker_command) or point "
                  "TGRUNNER_SOCKET at the daemon's listen socket")


def _default_logging():
    if logging.getLogger().handlers or log.handlers:
        return
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("%(name)s[%(process)d]: "
                                     "%(levelname)s: %(message)s"))
    log.addHandler(h)
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)


def _close_loop(loop):
    """Cancel what is left on loop, give it CLEANUP_GRACE, close the
    loop; returns how many tasks would not end."""
    stuck = 0
    try:
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            _, pending = loop.run_until_complete(
                asyncio.wait(tasks, timeout=CLEANUP_GRACE))
            stuck = len(pending)
        if not stuck:
            loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        if not stuck:
            loop.close()
    return stuck
