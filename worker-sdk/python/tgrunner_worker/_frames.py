"""Frames of the tgrunner worker protocol (proto/PROTOCOL.md): encoding,
decoding and the checks a worker makes on what the daemon sends."""

import json
import re

PROTOCOL = 1
PROTO_MAX_FRAME = 1048576	# bytes, newline included
MAX_SLOTS = 1024
MAX_CALLS = 100			# calls in one done
MAX_NAME = 256			# bytes of hello.name
ID_MAX = (1 << 63) - 1

_METHOD_RX = re.compile(r"[A-Za-z0-9_]{1,64}\Z")
# \u0000 that is an escape, not a literal backslash followed by "u0000".
_NUL_ESC_RX = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")

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


def _is_int(v, lo=0, hi=ID_MAX):
    return type(v) is int and lo <= v <= hi


def decode(line):
    """The frame in line (bytes, without its newline) as a dict; raises
    ProtocolError when it is not a well-formed daemon frame.  Members
    nobody knows are kept (and ignored)."""
    if b"\0" in line:
        raise ProtocolError("NUL byte in a frame")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError("invalid UTF-8: %s" % e) from None
    try:
        msg = json.loads(text, object_pairs_hook=_pairs,
                         parse_constant=_constant)
    except ValueError as e:
        raise ProtocolError("malformed JSON: %s" % e) from None
    except RecursionError:
        raise ProtocolError("JSON nested too deeply") from None
    if not isinstance(msg, dict):
        raise ProtocolError("a frame must be a JSON object")
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


def _check_welcome(m):
    if m.get("protocol") != PROTOCOL or type(m.get("protocol")) is not int:
        return "protocol %r, expected %d" % (m.get("protocol"), PROTOCOL)
    if not _is_int(m.get("worker_id")):
        return "bad worker_id"
    if not isinstance(m.get("bot"), dict):
        return "bot is not an object"
    if "max_frame" in m and not _is_int(m["max_frame"], 64, 1 << 40):
        return "bad max_frame"
    root, token = m.get("api_root"), m.get("api_token")
    if (root is None) != (token is None):
        return "api_root and api_token come together"
    if root is not None and not (isinstance(root, str) and
                                 isinstance(token, str)):
        return "api_root and api_token must be strings"
    return None


def _check_update(m):
    if not _is_int(m.get("id")):
        return "bad id"
    keys = m.get("keys")
    if not isinstance(keys, list) or \
            not all(isinstance(k, str) for k in keys):
        return "keys is not an array of strings"
    if not _is_int(m.get("attempt"), 1):
        return "bad attempt"
    if not _is_int(m.get("deadline")):
        return "bad deadline"
    if not isinstance(m.get("update"), dict):
        return "update is not an object"
    return None


def _check_result(m):
    ref = m.get("ref")
    if not isinstance(ref, str) and type(ref) is not int:
        return "bad ref"
    if type(m.get("ok")) is not bool:
        return "ok is not a boolean"
    if not m["ok"]:
        if type(m.get("error_code")) is not int:
            return "bad error_code"
        if not isinstance(m.get("description", ""), str):
            return "bad description"
        if not isinstance(m.get("parameters", {}), dict):
            return "bad parameters"
        if "retry_after" in m and not _is_int(m["retry_after"]):
            return "bad retry_after"
    return None


def _check_cancel(m):
    if not _is_int(m.get("id")):
        return "bad id"
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
