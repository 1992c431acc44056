"""Files on disk as the server trusts them: names as shown, and opening an indexed file.

File names are whatever bytes the file system holds. Python hands undecodable
bytes over as surrogate escapes (``os.fsdecode``); they round-trip to the file
system but are not valid UTF-8, so JSON, HTML, headers and terminals get
:func:`shown` instead.

:func:`open_verified` is the one check between a database row and the bytes
sent to a client: the file must still be the regular file that was indexed, at
its canonical location, when it is opened. A symlink, a FIFO, a device, an
edited or swapped file, or a folder on the way replaced by a symlink is refused.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import sys
from typing import BinaryIO

# readlink of /proc/self/fd/N names the file an fd really refers to (Linux): it catches a folder
# on the way swapped for a symlink between the walk and the request, which O_NOFOLLOW cannot.
_PROC_FD = sys.platform.startswith("linux") and os.path.isdir("/proc/self/fd")
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO never blocks
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOCTTY", 0)
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def shown(path: str) -> str:
    """A file name for people and protocols: valid UTF-8, undecodable bytes as ``\\xNN``."""
    if path.isascii():
        return path
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def download_name(path: str) -> str:
    """The base name, as shown, with control characters (a newline would break the header) as ``_``."""
    return _CONTROL.sub("_", shown(os.path.basename(path))) or "image"


class NotTheIndexedFile(Exception):
    """The file at the indexed location is not the one that was indexed (any more)."""


def open_verified(path: str, size: int, mtime: float) -> tuple[BinaryIO, os.stat_result]:
    """Open ``path`` (a canonical location: no symlink anywhere in it) for reading, only if it is
    a regular file with this size and mtime that really lies at ``path``.

    Raises FileNotFoundError (or another OSError) when it cannot be opened, and
    NotTheIndexedFile when something else is there now.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a symlink (EMLINK on BSDs)
            raise NotTheIndexedFile("it is a symbolic link now") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotTheIndexedFile("it is not a regular file now")
        if st.st_size != size or abs(st.st_mtime - mtime) > 1e-6:
            raise NotTheIndexedFile("its size or modification time changed")
        if _PROC_FD and os.readlink(f"/proc/self/fd/{fd}") != path:
            raise NotTheIndexedFile("it is reached through a symbolic link now")
        return os.fdopen(fd, "rb"), st
    except BaseException:
        os.close(fd)
        raise
