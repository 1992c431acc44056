"""Walk image folders: stat only, no decoding.

Hidden files and folders (including macOS ``._*`` resource forks) are
skipped; symlinked folders are followed once, so loops end.

A symlinked FOLDER is followed only when its target lies inside an indexed
folder, or anywhere when its root opted in (``--follow-external-links``, or an
older home's folder-links-only choice); one leading elsewhere is reported (a
run warning) and not entered. A symlinked FILE is followed only when its target
lies in an allowed area (see :class:`LinkPolicy`): inside an indexed folder or a
symlinked folder the walk followed, or anywhere when its root opted in.
Otherwise, like a dangling link, a FIFO or device named like an image, or an
entry that cannot be stat'ed, it is yielded with an ``error`` (recorded as a
failed row) and never read. Each file carries its canonical location
(``real_path``) when that differs from ``path``: the server opens only there.

This runs over every file of every root each night, so it stays lean: the
extension test before any type check, ``DirEntry`` type bits (no syscall) for
the type, one ``stat`` per image file, tuples rather than dataclasses. A
canonical location is derived from its folder's (a string join); ``realpath``
runs only for the root and for entries that are symlinks.

Video files (``search.media.video.VIDEO_EXTENSIONS``) are walked by the same rules when the caller
asks (``videos=True``); the indexer decides afterwards whether it can read them.

Each image carries the stat of its sidecar caption file (``NAME.txt``), found in
the folder's listing (a ``stat`` only where one exists): the plan re-reads
captions when a sidecar appears, changes or goes, whether or not the image did.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from indexer.captions import sidecar_names
from search.media.decode import IMAGE_EXTENSIONS
from search.media.files import shown
from search.media.video import VIDEO_EXTENSIONS

log = logging.getLogger(__name__)


class FileEntry(NamedTuple):
    path: str
    size: int
    mtime: float
    real_path: str | None = None  # canonical location, when not ``path`` itself
    error: str | None = None  # why it must not be read: recorded as a failed row
    sidecar: str | None = None  # its sidecar's stat (:func:`sidecar_stat`); None: it has none


class LinkPolicy:
    """Where a symlinked file, folder or sidecar may lead.

    Allowed areas are canonical folders: the indexed roots' and those of symlinked folders the
    walk followed. A root listed in ``open_roots`` (its user passed --follow-external-links)
    accepts links to anywhere; one in ``open_folder_roots`` (an older home's choice), folder links.
    """

    def __init__(
        self, areas: Iterable[str] = (), open_roots: Iterable[str] = (), open_folder_roots: Iterable[str] = ()
    ):
        self._areas: set[str] = set()
        for area in areas:
            self.add_area(area)
        self._open = tuple(_prefix(os.path.abspath(r)) for r in open_roots)
        self._open_folders = tuple(_prefix(os.path.abspath(r)) for r in open_folder_roots)

    def add_area(self, real_folder: str) -> None:
        self._areas.add(_prefix(real_folder))

    def allows(self, path: str, target: str) -> bool:
        """May ``path`` (a symlink) be read through, given its canonical ``target``?"""
        target += os.sep
        if any(target.startswith(a) for a in self._areas):
            return True
        return (path + os.sep).startswith(self._open) if self._open else False

    def allows_folder(self, path: str, target: str) -> bool:
        """May the walk enter ``path`` (a symlinked folder), given its canonical ``target``?"""
        return self.allows(path, target) or (path + os.sep).startswith(self._open_folders)


def _prefix(folder: str) -> str:
    return folder.rstrip(os.sep) + os.sep


def external_link_error(target: str) -> str:
    return f"symlink to a file outside the indexed folders ({shown(target)}); pass --follow-external-links to index it"


def external_folder_warning(path: str, target: str) -> str:
    return (
        f"{shown(path)}: symlink to a folder outside the indexed folders ({shown(target)}), not followed; "
        "pass --follow-external-links to index it"
    )


def walk_images(
    root: str, links: LinkPolicy | None = None, warn: Callable[[str], None] | None = None, videos: bool = False
) -> Iterator[FileEntry]:
    """Yield every image file under ``root`` (absolute paths); ``videos``: video files too.

    ``links`` decides where symlinked folders and files may lead; symlinked folders this walk
    follows are added to it (so sidecars checked later see them too). Symlinked files are judged
    at the end, once every followed folder is known, so the order of names does not matter. A
    symlinked folder leading outside is not entered: ``warn`` (default: logged) says so.
    """
    warn = warn or log.warning
    wanted = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS if videos else IMAGE_EXTENSIONS
    top = os.path.abspath(root)
    real_top = os.path.realpath(top)
    if links is None:
        links = LinkPolicy()
    links.add_area(real_top)
    seen_dirs: set[tuple[int, int]] = set()
    linked_files: list[tuple[os.DirEntry, str | None]] = []
    # (folder as walked, its canonical location, reached through a symlink)
    stack: list[tuple[str, str, bool]] = [(top, real_top, False)]
    while stack:
        folder, real_folder, via_link = stack.pop()
        try:
            st = os.stat(folder)
        except OSError as exc:
            log.warning("cannot read folder %s: %s", folder, exc)
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            continue  # symlink loop or a folder reached twice
        seen_dirs.add(key)
        if via_link:
            links.add_area(real_folder)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot list folder %s: %s", folder, exc)
            continue
        relocated = real_folder != folder  # canonical names differ from walked ones below here
        texts = {e.name: e for e in entries if e.name.endswith(".txt")}
        subdirs = []
        for entry in entries:
            name = entry.name
            if name[0] == ".":
                continue
            is_image = name[name.rfind(".") :].lower() in wanted  # an image, or a video when asked
            try:
                if entry.is_symlink():
                    if is_image and not entry.is_dir():
                        # judged once every followed folder is known
                        linked_files.append((entry, sidecar_stat(name, texts) if texts else None))
                    elif entry.is_dir():
                        target = os.path.realpath(entry.path)
                        if links.allows_folder(entry.path, target):
                            subdirs.append((entry.path, target, True))
                        else:
                            warn(external_folder_warning(entry.path, target))
                elif is_image and entry.is_file():
                    st = entry.stat()
                    yield FileEntry(
                        entry.path,
                        st.st_size,
                        st.st_mtime,
                        os.path.join(real_folder, name) if relocated else None,
                        None,
                        sidecar_stat(name, texts) if texts else None,
                    )
                elif entry.is_dir():
                    subdirs.append((entry.path, os.path.join(real_folder, name) if relocated else entry.path, False))
                elif is_image:
                    yield _failed(entry, "not a regular file")
            except OSError as exc:  # permission denied, vanished
                if is_image:
                    yield _failed(entry, f"cannot stat: {exc.strerror or exc}")
                else:
                    log.warning("skipping %s: %s", entry.path, exc)
        stack.extend(reversed(subdirs))
    for entry, sidecar in linked_files:
        yield _linked_file(entry, links)._replace(sidecar=sidecar)


def sidecar_stat(image_name: str, texts: dict[str, os.DirEntry]) -> str | None:
    """``"WHICH:SIZE:MTIME_NS"`` of each sidecar candidate of ``image_name`` present among ``texts``
    (a folder's ``.txt`` entries; a symlink's target is stat'ed, never read), ``;``-joined; None: none."""
    found = []
    for which, name in enumerate(sidecar_names(image_name)):
        entry = texts.get(name)
        if entry is not None:
            try:
                st = entry.stat()
                found.append(f"{which}:{st.st_size}:{st.st_mtime_ns}")
            except OSError:  # a dangling link: there, but nothing to read
                found.append(f"{which}:-")
    return ";".join(found) or None


def _linked_file(entry: os.DirEntry, links: LinkPolicy) -> FileEntry:
    """A symlink named like an image: followed only to a regular file the policy allows."""
    target = os.path.realpath(entry.path)
    try:
        st = os.stat(target)
    except OSError as exc:
        return _failed(entry, f"broken symlink ({shown(target)}): {exc.strerror or exc}")
    if not stat.S_ISREG(st.st_mode):
        return _failed(entry, f"symlink to something that is not a regular file ({shown(target)})")
    if not links.allows(entry.path, target):
        return _failed(entry, external_link_error(target))
    return FileEntry(entry.path, st.st_size, st.st_mtime, None if target == entry.path else target)


def _failed(entry: os.DirEntry, error: str) -> FileEntry:
    """An entry recorded with its error; size and mtime of the entry itself, so a change is noticed."""
    try:
        st = entry.stat(follow_symlinks=False)
        size, mtime = st.st_size, st.st_mtime
    except OSError:
        size, mtime = 0, 0.0
    return FileEntry(entry.path, size, mtime, None, error)
