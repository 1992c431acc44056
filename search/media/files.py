"""Files on disk as the server trusts them: names as shown, and opening an indexed file.

File names are whatever bytes the file system holds. Python hands undecodable
bytes over as surrogate escapes (``os.fsdecode``); they round-trip to the file
system but are not valid UTF-8, and a name (or a caption, or an error naming a
file) may hold control characters that a terminal obeys: ESC starts a sequence
that clears the screen or writes the clipboard, BEL ends one. So JSON, HTML,
headers, terminals and log lines get :func:`shown` instead (log lines through
:class:`ShownLogArgs`).

:func:`open_verified` is the one check between a database row and the bytes
sent to a client: the file must still be the regular file that was indexed, at
its canonical location, when it is opened. A symlink, a FIFO, a device, an
edited or swapped file, or a folder on the way replaced by a symlink is refused.
"""

from __future__ import annotations

import errno
import logging
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
# C0, DEL and C1 (U+0080-U+009F, which some terminals obey as 8-bit escapes)
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _escaped(m: re.Match[str]) -> str:
    # C1 as \u0085: \x85 already means the undecodable byte 0x85
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x80 else f"\\u{c:04x}"


def shown(text: str) -> str:
    """Text from disk (a file name, a caption, an error naming a file) for people and protocols:
    valid UTF-8, undecodable bytes as ``\\xNN``, control characters as ``\\x1b`` (C1 as ``\\u009b``),
    so nothing shown can drive a terminal. Idempotent: what it returns, it returns unchanged."""
    if text.isascii() and text.isprintable():
        return text
    if not text.isascii():
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return _CONTROLS.sub(_escaped, text)


class ShownLogArgs(logging.Filter):
    """Log lines show the text they interpolate (file names, captions, errors) through :func:`shown`, and
    a traceback line by line (an exception's message may name a file).

    A handler filter, so every logger's lines are covered; the format string itself is code, kept as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_shown_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _shown_arg(v) for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:  # what Formatter.format would write, shown
            record.exc_text = "\n".join(map(shown, _TRACEBACKS.formatException(record.exc_info).split("\n")))
        return True


_TRACEBACKS = logging.Formatter()


def _shown_arg(value: object) -> object:
    if isinstance(value, (int, float)) or value is None:
        return value  # %d, %.1f still format it
    return shown(str(value))


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
