# SPDX-License-Identifier: ISC
"""Client for tgrunner-fakeapi, the fake Telegram Bot API server.

Starts the server on a free loopback port and drives its control interface
(/_ctl/...) and its Bot API side.  Standard library only, so scenario tests
and benchmarks need nothing installed.

    with FakeApi() as api:
        first, last = api.inject([{"message": {...}}])
        api.wait_for(lambda: api.stats()["confirmed_offset"] > last)
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_TOKEN = "123456:TEST-TOKEN"


class FakeApiError(Exception):
    """The control interface refused a request (status and decoded body)."""

    def __init__(self, status, body):
        super().__init__("fakeapi answered %s: %r" % (status, body))
        self.status = status
        self.body = body


def find_binary(builddir=None):
    """Path of tgrunner-fakeapi: in builddir or $TG_BUILDDIR, else on PATH."""
    builddir = builddir or os.environ.get("TG_BUILDDIR")
    if builddir:
        for rel in ("tgrunner-fakeapi", "tests/fakeapi/tgrunner-fakeapi"):
            path = os.path.join(builddir, rel)
            if os.access(path, os.X_OK):
                return path
    path = shutil.which("tgrunner-fakeapi")
    if path is None:
        raise FileNotFoundError("tgrunner-fakeapi not found (set TG_BUILDDIR)")
    return path


class FakeApi:
    """A running tgrunner-fakeapi; use as a context manager or call stop()."""

    def __init__(self, builddir=None, token=DEFAULT_TOKEN, seed=1,
                 first_update_id=None, verbose=False, binary=None):
        self.token = token
        self.binary = binary or find_binary(builddir)
        self.tmpdir = tempfile.mkdtemp(prefix="fakeapi-")
        portfile = os.path.join(self.tmpdir, "port")
        argv = [self.binary, "-l", "127.0.0.1:0", "-t", token,
                "-p", portfile, "-s", str(seed)]
        if first_update_id is not None:
            argv += ["-f", str(first_update_id)]
        if verbose:
            argv.append("-v")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        try:
            self.port = self._wait_port(portfile, 10)
        except Exception:
            self.stop()
            raise
        self.url = "http://127.0.0.1:%d" % self.port
        self.api_url = "%s/bot%s" % (self.url, token)

    def _wait_port(self, portfile, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("tgrunner-fakeapi exited with %d"
                                   % self.proc.returncode)
            try:
                with open(portfile) as f:
                    return int(f.read())
            except (FileNotFoundError, ValueError):
                time.sleep(0.01)
        raise TimeoutError("tgrunner-fakeapi did not write its port file")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self, timeout=5):
        """SIGTERM, wait, SIGKILL if needed; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        return self.proc.returncode

    # --- HTTP -----------------------------------------------------------

    def request(self, path, body=None, query=None, timeout=60,
                content_type="application/json"):
        """(status, decoded JSON or raw text) of one HTTP request."""
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None
        headers = {}
        if body is not None:
            data = body if isinstance(body, bytes) else (
                json.dumps(body).encode() if content_type ==
                "application/json" else body.encode())
            headers["Content-Type"] = content_type
        req = urllib.request.Request(url, data=data, headers=headers,
                                     method="POST" if data is not None
                                     else "GET")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    def _ctl(self, path, body=None, query=None):
        status, res = self.request("/_ctl/" + path, body, query)
        if status != 200 or not isinstance(res, dict) or not res.get("ok"):
            raise FakeApiError(status, res)
        return res

    # --- control interface ----------------------------------------------

    def inject(self, updates):
        """Add Update objects (update_id is assigned); returns (first, last)."""
        res = self._ctl("updates", updates)
        return res["first_id"], res["last_id"]

    def generate(self, count, chats, dist="uniform", hot_share=0.5, rate=0,
                 seed=1, **kw):
        """Generate text messages "seq <n>"; returns (first, last)."""
        body = dict(count=count, chats=chats, dist=dist, hot_share=hot_share,
                    rate=rate, seed=seed, **kw)
        res = self._ctl("generate", body)
        return res["first_id"], res["last_id"]

    def stats(self):
        return self._ctl("stats")

    def calls(self, method=None, since=0):
        query = {"since": since}
        if method:
            query["method"] = method
        return self._ctl("calls", query=query)["calls"]

    def released(self):
        """[[update_id, unix_time], ...]: when each update became available."""
        return self._ctl("released")["released"]

    def fault(self, kind, method="getUpdates", count=1, **kw):
        self._ctl("fault", dict(kind=kind, method=method, count=count, **kw))

    def clear_faults(self):
        self._ctl("fault/clear", {})

    def restart_ids(self, first_id):
        self._ctl("restart_ids", {"first_id": first_id})

    def reset(self):
        self._ctl("reset", {})

    def add_file(self, file_id, content=None, size=None, seed=1,
                 file_path=None, chunked=False):
        """Register a file for getFile and /file/bot<token>/<path>: its
        content (str), or size deterministic bytes made from seed.
        Returns {"file": File object, "sha256": hex digest}."""
        body = {"file_id": file_id, "chunked": chunked}
        if content is not None:
            body["content"] = content
        if size is not None:
            body["size"] = size
            body["seed"] = seed
        if file_path is not None:
            body["file_path"] = file_path
        res = self._ctl("file", body)
        return {"file": res["file"], "sha256": res["sha256"]}

    # --- the Bot API side -------------------------------------------------

    def bot(self, method, _timeout=None, **params):
        """Call a Bot API method as a bot would; returns the decoded answer."""
        timeout = _timeout or float(params.get("timeout", 0)) + 10
        status, res = self.request("/bot%s/%s" % (self.token, method),
                                   params, timeout=timeout)
        return res

    # --- helpers -----------------------------------------------------------

    @staticmethod
    def wait_for(pred, timeout=30, interval=0.02):
        """Poll pred() until it is true; returns its value or raises."""
        deadline = time.monotonic() + timeout
        while True:
            value = pred()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in %ss" % timeout)
            time.sleep(interval)
