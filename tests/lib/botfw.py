# SPDX-License-Identifier: ISC
"""What the tests of bots written for grammY, Telegraf and
python-telegram-bot share (tests/scenario/test_adapters.py and
test_bot_frameworks.py): the frameworks, and updates a bot understands.

grammY and Telegraf come from the npm registry: the versions pinned in
tests/adapters/package-lock.json, which tests/install-deps.sh installs
(tests/install-node-deps.sh, into TGRUNNER_NODE_DEPS or
~/.cache/tgrunner/adapters-node).  Without them there, node_modules()
installs them with `npm ci` into the build tree, once; only when npm cannot
reach the registry does it skip.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import unittest

import tgtest

NODE = shutil.which("node")
NPM = shutil.which("npm")
SDK_NODE = os.path.join(tgtest.SRCDIR, "worker-sdk", "node")
SDK_PY = os.path.join(tgtest.SRCDIR, "worker-sdk", "python")
# where tests/install-node-deps.sh puts them
NODE_DEPS = os.environ.get("TGRUNNER_NODE_DEPS") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
    "tgrunner", "adapters-node")


def python_with_ptb():
    """A Python that imports telegram 13 (Debian's is in /usr/lib)."""
    for py in (sys.executable, "/usr/bin/python3"):
        try:
            out = subprocess.run([py, "-c", "import telegram; "
                                  "print(telegram.__version__)"],
                                 capture_output=True, text=True, timeout=60)
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.startswith("13."):
            return py
    return None


_node_modules = None


def node_modules():
    """The pinned grammy and telegraf, installed once into the build tree;
    SkipTest only when npm cannot reach the registry."""
    global _node_modules
    if _node_modules is not None:
        return _node_modules
    if NODE is None or NPM is None:
        raise unittest.SkipTest("node or npm not installed "
                                "(tests/install-deps.sh installs them)")
    src = os.path.join(tgtest.SRCDIR, "tests", "adapters")
    dest = os.path.join(tgtest.BUILDDIR, "tests", "adapters-node")
    with open(os.path.join(src, "package-lock.json"), "rb") as f:
        want = hashlib.sha256(f.read()).hexdigest()
    for where in (NODE_DEPS, dest):
        try:
            with open(os.path.join(where, "installed.stamp")) as f:
                if f.read() == want:
                    _node_modules = os.path.join(where, "node_modules")
                    return _node_modules
        except OSError:
            pass
    stamp = os.path.join(dest, "installed.stamp")
    ping = subprocess.run([NPM, "ping"], capture_output=True, text=True,
                          timeout=120)
    if ping.returncode != 0:
        raise unittest.SkipTest("npm cannot reach the registry, so grammy "
                                "and telegraf cannot be installed: %s"
                                % (ping.stderr.strip()[-300:]))
    os.makedirs(dest, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(os.path.join(src, name), os.path.join(dest, name))
    ci = subprocess.run([NPM, "ci", "--no-audit", "--no-fund",
                         "--loglevel=error"], cwd=dest, capture_output=True,
                        text=True, timeout=600)
    if ci.returncode != 0:
        raise AssertionError("npm ci failed:\n%s%s" % (ci.stdout, ci.stderr))
    with open(stamp, "w") as f:
        f.write(want)
    _node_modules = os.path.join(dest, "node_modules")
    return _node_modules


def message(chat, text, mid=7):
    m = {"message_id": mid, "date": 1700000000,
         "chat": {"id": chat, "type": "private"},
         "from": {"id": chat, "is_bot": False, "first_name": "U"},
         "text": text}
    if text.startswith("/"):
        m["entities"] = [{"type": "bot_command", "offset": 0,
                          "length": len(text.split()[0])}]
    return {"message": m}


def callback(chat, data, cq_id):
    return {"callback_query": {
        "id": cq_id, "from": {"id": chat, "is_bot": False, "first_name": "U"},
        "chat_instance": "ci%d" % chat, "data": data,
        "message": {"message_id": 1, "date": 1700000000,
                    "chat": {"id": chat, "type": "private"},
                    "text": "Hello! Do you like tgrunner?"}}}
