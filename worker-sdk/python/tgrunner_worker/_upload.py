# SPDX-License-Identifier: ISC
"""File objects for uploads through the daemon (tgrunner-protocol(7),
"File uploads").  Put the dict anywhere in a call's params:

    await ctx.call("sendPhoto", chat_id=ctx.chat_id,
                   photo=upload_file("photos/cat.jpg"))
    ctx.add_call("sendDocument", chat_id=ctx.chat_id,
                 document=upload_bytes(b"report", "report.txt"))
"""

import base64

from ._frames import PROTO_MAX_FRAME


def _extra(obj, filename, content_type):
    if filename is not None:
        obj["filename"] = filename
    if content_type is not None:
        obj["content_type"] = content_type
    return obj


def upload_file(path, filename=None, content_type=None):
    """A file under the daemon's upload_dir, by its path relative to it.
    The daemon opens it (without following symbolic links) and sends its
    bytes; filename defaults to the path's last component.  Raises
    ValueError for a path the daemon would refuse anyway."""
    if not isinstance(path, str) or not path:
        raise ValueError("upload_file: path must be a non-empty string")
    if path.startswith("/"):
        raise ValueError("upload_file: path must be relative to upload_dir")
    if ".." in path.split("/"):
        raise ValueError('upload_file: path must not contain ".."')
    return _extra({"@file": path}, filename, content_type)


def upload_bytes(data, filename=None, content_type=None):
    """Bytes sent inline (base64 in the frame): up to about 768 KiB, the
    frame limit.  filename defaults to "file" on the daemon's side."""
    data = bytes(data)
    encoded = base64.b64encode(data).decode("ascii")
    if len(encoded) >= PROTO_MAX_FRAME:
        raise ValueError("upload_bytes: %d bytes do not fit in a frame; "
                         "use upload_file" % len(data))
    return _extra({"@data": encoded}, filename, content_type)
