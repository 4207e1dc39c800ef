# SPDX-License-Identifier: ISC
"""Frames of the tgrunner worker protocol (proto/PROTOCOL.md): encoding,
decoding and the checks a worker makes on what the daemon sends."""

import json
import math
import re

PROTOCOL = 1
PROTO_MAX_FRAME = 1048576	# bytes, newline included
MAX_SLOTS = 1024
MAX_CALLS = 100			# calls in one done
MAX_NAME = 256			# bytes of hello.name
MAX_REF = 128			# bytes of a string ref
MIN_FRAME = 64			# least welcome.max_frame
MAX_API = 512			# bytes of welcome.api_root, welcome.api_token
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
ID_MAX = INT64_MAX

_METHOD_RX = re.compile(r"[A-Za-z0-9_]{1,64}\Z")
# \u0000 that is an escape, not a literal backslash followed by "u0000".
_NUL_ESC_RX = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
# An escaped NUL or lone surrogate, if every backslash starts an escape
# (else _ESCAPED_BACKSLASH says the frame must be walked).  A false alarm
# costs a walk over the frame; a miss would let through what the daemon
# refuses.
_SUSPECT_ESC_RX = re.compile(
    r"\\u(?:0000|[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])|"
    r"(?<!\\u[dD][89abAB][0-9a-fA-F]{2}\\u)[dD][c-fC-F])")
_SURROGATE_ESC_RX = re.compile(r"\\u[dD][89a-fA-F]")
_ESCAPED_BACKSLASH = "\\\\"

# Frames a worker sends: the daemon never sends them.
_WORKER_TYPES = frozenset(("hello", "done", "fail", "call"))


class ProtocolError(Exception):
    """The daemon sent something the protocol does not allow.  Fatal: the
    worker exits non-zero and the daemon starts a new one."""


class FrameTooLarge(ValueError):
    """A frame would exceed the daemon's max_frame (welcome.max_frame)."""


def check_method(method):
    if not isinstance(method, str) or not _METHOD_RX.match(method):
        raise ValueError("bad Bot API method name %r: 1..64 characters of "
                         "[A-Za-z0-9_]" % (method,))


def dumps(obj):
    """Compact single-line JSON text of obj.  Raises ValueError (or
    TypeError for objects JSON cannot represent) for what the daemon would
    reject: NaN, infinities, lone surrogates and NUL characters."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    if "\\u0000" in text and _NUL_ESC_RX.search(text):
        raise ValueError("frames cannot carry NUL characters (U+0000)")
    text.encode("utf-8")	# lone surrogates: UnicodeEncodeError
    return text


def encode(obj, max_frame):
    """One frame: bytes of obj's compact JSON and a newline."""
    data = dumps(obj).encode("utf-8") + b"\n"
    if len(data) > max_frame:
        raise FrameTooLarge("%s frame of %d bytes exceeds max_frame %d"
                            % (obj.get("type"), len(data), max_frame))
    return data


def _pairs(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise ProtocolError("duplicate member %r" % k)
        obj[k] = v
    return obj


def _constant(name):
    raise ProtocolError("%s is not JSON" % name)


def _int64(text):
    v = int(text)
    if not INT64_MIN <= v <= INT64_MAX:
        raise ProtocolError("number out of range (integers must fit in 64 "
                            "bits): %.40s" % text)
    return v


def _real(text):
    v = float(text)
    if math.isinf(v):
        raise ProtocolError("number out of range (reals must be finite): "
                            "%.40s" % text)
    return v


def _bad_text(v):
    """Why v holds what no frame may (an escaped NUL or lone surrogate)."""
    if isinstance(v, str):
        if "\0" in v:
            return "NUL character in a frame"
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return "escaped lone surrogate in a frame"
        return None
    items = v.items() if isinstance(v, dict) else \
        enumerate(v) if isinstance(v, list) else ()
    for k, x in items:
        why = (isinstance(k, str) and _bad_text(k)) or _bad_text(x)
        if why:
            return why
    return None


def _is_int(v, lo=0, hi=ID_MAX):
    return type(v) is int and lo <= v <= hi


def _is_str(v, maxlen):
    return isinstance(v, str) and len(v.encode("utf-8")) <= maxlen


def decode(line):
    """The frame in line (bytes, without its newline) as a dict; raises
    ProtocolError when it is not a well-formed daemon frame, exactly where
    the daemon's own decoder would (proto/vectors says so).  A frame of a
    type this library does not know is returned (the caller ignores it);
    members nobody knows are kept (and ignored)."""
    if len(line) + 1 > PROTO_MAX_FRAME:
        raise ProtocolError("frame longer than %d bytes" % PROTO_MAX_FRAME)
    if b"\0" in line:
        raise ProtocolError("NUL byte in a frame")
    if b"\n" in line:
        raise ProtocolError("newline inside a frame")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError("invalid UTF-8: %s" % e) from None
    try:
        msg = json.loads(text, object_pairs_hook=_pairs, parse_int=_int64,
                         parse_float=_real, parse_constant=_constant)
    except ValueError as e:
        raise ProtocolError("malformed JSON: %s" % e) from None
    except RecursionError:
        raise ProtocolError("JSON nested too deeply") from None
    if not isinstance(msg, dict):
        raise ProtocolError("a frame must be a JSON object")
    # only an escape can put NUL or a lone surrogate in a decoded string
    if _SUSPECT_ESC_RX.search(text) or (_ESCAPED_BACKSLASH in text and
                                        _SURROGATE_ESC_RX.search(text)):
        why = _bad_text(msg)
        if why:
            raise ProtocolError(why)
    kind = msg.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("frame without a string member \"type\"")
    check = _CHECKS.get(kind)
    if check is not None:
        why = check(msg)
        if why:
            raise ProtocolError("%s frame: %s" % (kind, why))
    elif kind in _WORKER_TYPES:
        raise ProtocolError("%s frame sent by the daemon" % kind)
    return msg


# Section 4 of PROTOCOL.md, the daemon's frames: the same ranges as
# proto/proto.c.

def _check_welcome(m):
    if not _is_int(m.get("protocol"), 1, INT32_MAX):
        return "bad protocol"
    if not _is_int(m.get("worker_id"), 0, INT32_MAX):
        return "bad worker_id"
    if not isinstance(m.get("bot"), dict):
        return "bot is not an object"
    if not _is_int(m.get("max_frame"), MIN_FRAME, PROTO_MAX_FRAME):
        return "max_frame is not an integer %d..%d" % (MIN_FRAME,
                                                     PROTO_MAX_FRAME)
    for name in ("api_root", "api_token"):
        if name in m and not _is_str(m[name], MAX_API):
            return "%s is not a string of at most %d bytes" % (name, MAX_API)
    if ("api_root" in m) != ("api_token" in m):
        return "api_root and api_token come together"
    return None


def _check_update(m):
    if not _is_int(m.get("id")):
        return "bad id"
    keys = m.get("keys")
    if not isinstance(keys, list) or \
            not all(isinstance(k, str) for k in keys):
        return "keys is not an array of strings"
    if not _is_int(m.get("attempt"), 1, INT32_MAX):
        return "bad attempt"
    if not _is_int(m.get("deadline")):
        return "bad deadline"
    if not isinstance(m.get("update"), dict):
        return "update is not an object"
    return None


def _check_result(m):
    ref = m.get("ref")
    if not (type(ref) is int or _is_str(ref, MAX_REF)):
        return "bad ref"
    if type(m.get("ok")) is not bool:
        return "ok is not a boolean"
    if m["ok"]:
        if "result" not in m:
            return "no result"
        return None
    if not _is_int(m.get("error_code"), INT32_MIN, INT32_MAX):
        return "bad error_code"
    if not isinstance(m.get("description"), str):
        return "bad description"
    if not isinstance(m.get("parameters", {}), dict):
        return "bad parameters"
    if "retry_after" in m and not _is_int(m["retry_after"], 0, INT32_MAX):
        return "bad retry_after"
    return None


def _check_cancel(m):
    if not _is_int(m.get("id")):
        return "bad id"
    if not isinstance(m.get("reason", ""), str):
        return "bad reason"
    return None


def _check_shutdown(m):
    if "deadline" in m and not _is_int(m["deadline"]):
        return "bad deadline"
    return None


_CHECKS = {
    "welcome": _check_welcome,
    "update": _check_update,
    "result": _check_result,
    "cancel": _check_cancel,
    "shutdown": _check_shutdown,
}
