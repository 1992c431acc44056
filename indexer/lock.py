"""One (re)index job at a time, via an advisory lock on ``glimpse.lock``.

``flock`` is released by the kernel when its holder dies, so a lock file left
by a killed job is stale by construction: the next job simply acquires it.

One catch: a flock belongs to the open file, and ``fork`` shares the open file
with the child. The decode workers are forked children, and after a kill -9
of the job they live on for a few seconds (until they notice their parent is
gone), holding the lock of a dead job. So every forked child closes its copy
of the lock descriptor at once (``os.register_at_fork``); the lock then dies
with the job process itself.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from search.errors import EXIT_LOCKED, GlimpseError


class LockHeld(GlimpseError):
    """Another job holds the lock (exit code 3)."""

    exit_code = EXIT_LOCKED


_held_fds: set[int] = set()


def _close_in_child() -> None:
    for fd in list(_held_fds):
        try:
            os.close(fd)
        except OSError:
            pass
    _held_fds.clear()


os.register_at_fork(after_in_child=_close_in_child)


class JobLock:
    """``with JobLock(path):`` — raises :class:`LockHeld` naming the holder's pid."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._fd: int | None = None

    def __enter__(self) -> JobLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockHeld(
                f"another index job is running (pid {holder}, lock {self.path}); try again when it has finished"
            ) from None
        _held_fds.add(fd)
        try:  # the pid only names the holder to a second job: a full disk must not fail the job here
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            os.fsync(fd)
        except OSError:
            pass
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            _held_fds.discard(self._fd)
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @staticmethod
    def is_held(path: Path | str) -> bool:
        """Whether some live process holds the lock (a leftover file alone does not count)."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
