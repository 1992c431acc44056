"""Walk image folders: stat only, no decoding.

Hidden files and folders (including macOS ``._*`` resource forks) are
skipped; symlinked folders are followed once, so loops end.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterator

from search.images import is_image_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileEntry:
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
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=True):
                    subdirs.append(entry.path)
                elif entry.is_file(follow_symlinks=True) and is_image_path(entry.name):
                    st = entry.stat(follow_symlinks=True)
                    yield FileEntry(entry.path, st.st_size, st.st_mtime)
            except OSError as exc:  # dangling symlink, permission denied
                log.warning("skipping %s: %s", entry.path, exc)
        stack.extend(reversed(subdirs))
