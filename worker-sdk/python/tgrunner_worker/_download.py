# SPDX-License-Identifier: ISC
"""Downloads through the daemon's Bot API endpoint (tgrunner-protocol(7),
"The Bot API endpoint"): GET <api_root>/file/bot<api_token>/<file_path>.

The endpoint is the daemon's own, on loopback or a Unix socket, so a small
HTTP/1.1 client on asyncio streams does: one request per connection,
Content-Length, chunked or close-delimited bodies, bounded headers, and at
most IDLE seconds without a byte.  Standard library only.
"""

import asyncio
import json
import os
import urllib.parse

IDLE = 60.0		# s without a byte from the endpoint: give up
HEAD_MAX = 16384	# bytes of status line and headers
ERROR_MAX = 65536	# bytes of an error answer kept
CHUNK = 65536


def endpoint_from(welcome):
    """(api_root, api_token) from a welcome frame, else from
    $TGRUNNER_API_ROOT / $TGRUNNER_API_TOKEN; (None, None) if neither has
    both."""
    root, token = welcome.get("api_root"), welcome.get("api_token")
    if not (root and token):
        root = os.environ.get("TGRUNNER_API_ROOT")
        token = os.environ.get("TGRUNNER_API_TOKEN")
    if not (root and token):
        return None, None
    return root, token


async def _connect(root):
    if root.startswith("unix:"):
        return await asyncio.open_unix_connection(root[5:])
    u = urllib.parse.urlsplit(root)
    if u.scheme != "http" or not u.hostname or not u.port:
        raise ValueError("api_root %r: expected http://host:port or "
                         "unix:/path" % root)
    return await asyncio.open_connection(u.hostname, u.port)


async def _read(coro):
    try:
        return await asyncio.wait_for(coro, IDLE)
    except asyncio.TimeoutError:
        raise ConnectionError("the Bot API endpoint sent nothing for %d s"
                              % IDLE) from None


async def _head(reader):
    try:
        raw = await _read(reader.readuntil(b"\r\n\r\n"))
    except asyncio.IncompleteReadError:
        raise ConnectionError("the Bot API endpoint closed the "
                              "connection early") from None
    except asyncio.LimitOverrunError:
        raise ConnectionError("the Bot API endpoint sent headers too "
                              "long") from None
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or \
            not parts[1].isdigit():
        raise ConnectionError("the Bot API endpoint does not speak HTTP")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return int(parts[1]), headers


class _Sink:
    """Bytes to memory or to a file, at most max_size (None: no bound)."""

    def __init__(self, max_size, path=None):
        self.max = max_size
        self.total = 0
        self.parts = []
        self.f = open(path, "wb") if path is not None else None

    def put(self, data):
        self.total += len(data)
        if self.max is not None and self.total > self.max:
            raise ValueError("the file has more than %d bytes" % self.max)
        if self.f is not None:
            self.f.write(data)
        else:
            self.parts.append(data)

    def close(self):
        if self.f is not None:
            self.f.close()

    def value(self):
        return b"".join(self.parts)


async def _copy(reader, sink, n):
    """n bytes of body into sink (n None: up to the end of the stream)."""
    while n is None or n > 0:
        data = await _read(reader.read(CHUNK if n is None else min(n, CHUNK)))
        if not data:
            if n is None:
                return
            raise ConnectionError("the Bot API endpoint cut the body short")
        sink.put(data)
        if n is not None:
            n -= len(data)


async def _body(reader, headers, sink):
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            line = await _read(reader.readline())
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise ConnectionError("the Bot API endpoint sent a bad "
                                      "chunk") from None
            if size == 0:
                return
            await _copy(reader, sink, size)
            await _read(reader.readline())
    length = headers.get("content-length")
    if length is not None:
        n = int(length)
        if sink.max is not None and n > sink.max:
            raise ValueError("the file has %d bytes, more than %d"
                             % (n, sink.max))
        await _copy(reader, sink, n)
    else:
        await _copy(reader, sink, None)


def _api_error(status, body):
    from ._worker import ApiError	# no import cycle at load time
    try:
        j = json.loads(body)
        desc = j.get("description", "")
        params = j.get("parameters")
    except (ValueError, AttributeError):
        desc, params = body[:200].decode("utf-8", "replace"), None
    return ApiError(status, desc, params, None, "download")


async def fetch_file(root, token, file_path, path=None, max_size=None):
    """The file at file_path (getFile's) from the endpoint: bytes, or
    written to path (removed again on error) and path returned."""
    target = "/file/bot%s/%s" % (token, urllib.parse.quote(file_path,
                                                           safe="/"))
    reader, writer = await _connect(root)
    sink = None
    try:
        writer.write(("GET %s HTTP/1.1\r\nHost: tgrunner\r\nUser-Agent: "
                      "tgrunner-worker\r\nConnection: close\r\n\r\n"
                      % target).encode("ascii"))
        await writer.drain()
        status, headers = await _head(reader)
        if status != 200:
            err = _Sink(ERROR_MAX)
            try:
                await _body(reader, headers, err)
            except ValueError:
                pass
            raise _api_error(status, err.value())
        sink = _Sink(max_size, path)
        await _body(reader, headers, sink)
        sink.close()
    except BaseException:
        if sink is not None:
            sink.close()
            if path is not None:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        raise
    finally:
        writer.close()
    return path if path is not None else sink.value()
