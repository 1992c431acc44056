"""Walk image folders: stat only, no decoding.

Hidden files and folders (including macOS ``._*`` resource forks) are
skipped; symlinked folders are followed once, so loops end.

This runs over every file of every root each night, so it stays lean: the
extension test before any type check, ``DirEntry`` type bits (no syscall) for
the type, one ``stat`` per image file, tuples rather than dataclasses.
"""

from __future__ import annotations

import logging
import os
from typing import Iterator, NamedTuple

from search.images import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)


class FileEntry(NamedTuple):
    path: str
    size: int
    mtime: float


def walk_images(root: str) -> Iterator[FileEntry]:
    """Yield every image file under ``root`` (absolute paths)."""
    seen_dirs: set[tuple[int, int]] = set()
    stack = [os.path.abspath(root)]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
        except OSError as exc:
            log.warning("cannot read folder %s: %s", folder, exc)
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            continue  # symlink loop or a folder reached twice
        seen_dirs.add(key)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot list folder %s: %s", folder, exc)
            continue
        subdirs = []
        for entry in entries:
            name = entry.name
            if name[0] == ".":
                continue
            try:
                if name[name.rfind("."):].lower() in IMAGE_EXTENSIONS and entry.is_file():
                    st = entry.stat()
                    yield FileEntry(entry.path, st.st_size, st.st_mtime)
                elif entry.is_dir():
                    subdirs.append(entry.path)
            except OSError as exc:  # dangling symlink, permission denied
                log.warning("skipping %s: %s", entry.path, exc)
        stack.extend(reversed(subdirs))
