"""Scan the roots and diff what is on disk against the stored rows: a :class:`Plan`.

The diff reads the database once (``Store.file_states``) and hashes only the files that
could be a move, a copy or a touch; everything else it hands to the embed stage.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

from indexer.hashing import content_hash
from indexer.progress import bar
from indexer.scan import FileEntry, LinkPolicy, walk_images
from search.media.video import AV_AVAILABLE, is_video_path
from search.settings import settings
from search.store.database import DONE, FAILED, HASH, ID, MTIME, REAL, ROOT, SIDECAR, SIZE, RowState, Store

log = logging.getLogger("glimpse.indexer")

__all__ = ["Copy", "Move", "Plan", "Refused", "Relink", "RowState", "Scan", "ToEmbed", "Touch", "diff", "scan"]


class Touch(NamedTuple):
    """Same bytes, new mtime: keep the row and its vector, record the new stat."""

    row_id: int
    entry: FileEntry


class Relink(NamedTuple):
    """The same file, now reached another way (a different canonical location)."""

    row_id: int
    entry: FileEntry


class Move(NamedTuple):
    """A new path holding the bytes of a row whose path is gone: the row follows the file."""

    row_id: int
    entry: FileEntry
    root_id: int


class Copy(NamedTuple):
    """A new path holding the bytes of a row that is still there: a new row reusing its vector."""

    src_id: int
    entry: FileEntry
    root_id: int
    content_hash: str


class Refused(NamedTuple):
    """An entry the walk refused to read (a symlink leading outside, a FIFO…): a failed row."""

    entry: FileEntry
    root_id: int
    row_id: int | None  # the row the path held before, if any


class ToEmbed(NamedTuple):
    """A file to decode and embed; ``row_id`` None: a new row."""

    entry: FileEntry
    root_id: int
    row_id: int | None
    content_hash: str | None
    hashed: bool = False  # hashed up front (then the decode workers need not hash it again)


@dataclass
class Plan:
    """What the run does to the rows, in the order it does it."""

    touch: list[Touch] = field(default_factory=list)
    relink: list[Relink] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    gone: dict[str, int] = field(default_factory=dict)  # path -> row id of files no longer there
    embed: list[ToEmbed] = field(default_factory=list)
    changed_ids: set[int] = field(default_factory=set)  # rows whose re-embedding counts as "changed"
    # Files whose sidecar captions are (re)read: their sidecar appeared, changed or went (or the file
    # moved, and a sidecar is beside it now or was before), whether or not the file itself changed.
    sidecars: list[FileEntry] = field(default_factory=list)
    unchanged: int = 0


@dataclass
class Scan:
    """What the walk found: ``seen`` maps each path to its entry and root id."""

    seen: dict[str, tuple[FileEntry, int]]
    available: set[int]  # ids of the roots that were there (rows under the others are kept)
    unavailable: list[str]  # roots missing or unmounted
    links: LinkPolicy
    # Video files found but not read this run (no PyAV, or GLIMPSE_VIDEO off): not in ``seen``, and
    # their rows, if an earlier run indexed them, are kept rather than called deleted.
    skipped_videos: set[str] = field(default_factory=set)


def video_skip_reason() -> str | None:
    """Why this run reads no video (GLIMPSE_VIDEO off, or PyAV missing), or None when it reads them."""
    if not settings()["GLIMPSE_VIDEO"]:
        return "video indexing is off (GLIMPSE_VIDEO)"
    if not AV_AVAILABLE:
        return "install PyAV (pip install av)"
    return None


def _same_stat(state: RowState, entry: FileEntry) -> bool:
    return state[SIZE] == entry.size and abs(state[MTIME] - entry.mtime) < 1e-6


def _is_empty_dir(path: str) -> bool:
    try:
        with os.scandir(path) as it:
            return next(it, None) is None
    except OSError:
        return True


def scan(
    store: Store, root_ids: dict[str, int], roots_with_rows: set[int | None], warn: Callable[[str], None] | None = None
) -> Scan:
    """Walk each root; mark each root available or not in the store. ``warn``: folder links not followed."""
    seen: dict[str, tuple[FileEntry, int]] = {}
    available: set[int] = set()
    unavailable: list[str] = []
    known = {r.id: r for r in store.roots()}
    # Symlinked files, folders (and sidecars) may lead into any indexed folder, or anywhere under a root that
    # opted in.
    links = LinkPolicy(
        areas=[os.path.realpath(r.path) for r in known.values()],
        open_roots=[r.path for r in known.values() if r.follow_external_links],
        open_folder_roots=[r.path for r in known.values() if r.follow_external_folder_links],
    )
    progress = bar(None, "scanning", unit="file")
    read_videos = video_skip_reason() is None
    skipped_videos: set[str] = set()
    for root, root_id in root_ids.items():
        is_dir = os.path.isdir(root)
        entries = list(walk_images(root, links, warn, videos=True)) if is_dir else []
        if not is_dir or (not entries and root_id in roots_with_rows and _is_empty_dir(root)):
            # Missing, or an empty mount point: keep its images, don't call them deleted.
            log.warning("root %s is missing or unmounted: its images are kept and marked unavailable", root)
            store.set_root_available(root_id, False)
            unavailable.append(root)
            continue
        if known.get(root_id) is not None and not known[root_id].available:
            log.info("root %s is available again", root)
        store.set_root_available(root_id, True)
        available.add(root_id)
        for e in entries:
            if not read_videos and is_video_path(e.path):
                skipped_videos.add(e.path)
            else:
                seen.setdefault(e.path, (e, root_id))
        progress.update(len(entries))
    progress.close()
    log.info("scanned %d files in %d folders", len(seen), len(root_ids))
    return Scan(seen, available, unavailable, links, skipped_videos)


def diff(found: Scan, states: dict[str, RowState], store: Store) -> Plan:
    """What changed since the stored rows ``states`` (``Store.file_states``), as a :class:`Plan`."""
    seen, available = found.seen, found.available
    plan = Plan()
    changed: list[tuple[FileEntry, int, int]] = []
    new: list[tuple[FileEntry, int]] = []
    for path, (entry, root_id) in seen.items():
        state = states.get(path)
        if entry.error is not None:  # never read (a symlink leading outside, a dangling one, a FIFO…)
            if state is not None and state[FAILED] and _same_stat(state, entry):
                plan.unchanged += 1
            else:
                plan.refused.append(Refused(entry, root_id, None if state is None else state[ID]))
            continue
        if state is None:
            new.append((entry, root_id))
            continue
        if state[SIDECAR] != entry.sidecar:
            plan.sidecars.append(entry)
        if _same_stat(state, entry):
            if state[DONE]:
                plan.unchanged += 1
                if state[REAL] != entry.real_path:
                    plan.relink.append(Relink(state[ID], entry))  # same file, reached another way
            else:
                plan.embed.append(ToEmbed(entry, root_id, state[ID], None))  # after a model change, or a crash
        else:
            changed.append((entry, root_id, state[ID]))
    # Rows under scanned roots that were not seen: gone (or moved; the hash decides).
    gone = {p: states[p] for p in states.keys() - seen.keys() - found.skipped_videos if states[p][ROOT] in available}
    # Hash up front only files that could turn out to be a move, a copy or a touch: equal bytes
    # need an equal size. Every other file is hashed by the decode workers, which read it anyway
    # (a fresh index of a big folder would otherwise read every byte twice).
    sizes_with_vectors = {st[SIZE] for st in states.values() if st[HASH] and st[DONE]}
    hashes = hash_files(
        [e for e, _ in new if e.size in sizes_with_vectors]
        + [e for e, _, row_id in changed if states[e.path][SIZE] == e.size]
    )
    for entry, root_id, row_id in changed:
        h, state = hashes.get(entry.path), states[entry.path]
        if h is not None and h == state[HASH] and state[DONE]:
            plan.touch.append(Touch(row_id, entry))  # same bytes, new mtime: keep the vector
            plan.unchanged += 1
        else:
            plan.changed_ids.add(row_id)
            plan.embed.append(ToEmbed(entry, root_id, row_id, h, entry.path in hashes))
    gone_by_hash: dict[str, list[tuple[str, int]]] = {}
    for p, st in gone.items():
        if st[HASH] and st[DONE]:
            gone_by_hash.setdefault(st[HASH], []).append((p, st[ID]))
    reusable = store.images_by_hash([h for h in hashes.values() if h]) if new else {}
    for entry, root_id in new:
        h = hashes.get(entry.path)
        had_sidecar = False  # a moved row keeps its captions: those of a sidecar it no longer has must go
        if h and gone_by_hash.get(h):
            old_path, row_id = gone_by_hash[h].pop()
            had_sidecar = gone.pop(old_path)[SIDECAR] is not None
            plan.moves.append(Move(row_id, entry, root_id))
        elif h and h in reusable:
            plan.copies.append(Copy(reusable[h], entry, root_id, h))
        else:
            plan.embed.append(ToEmbed(entry, root_id, None, h, entry.path in hashes))
        if entry.sidecar is not None or had_sidecar:
            plan.sidecars.append(entry)
    plan.gone = {p: s[ID] for p, s in gone.items()}
    return plan


def hash_files(entries: list[FileEntry]) -> dict[str, str | None]:
    """Content hash of each entry's canonical file, by walked path (None: it could not be read)."""
    if not entries:
        return {}
    progress = bar(len(entries), "hashing", unit="file")
    out = {}
    with ThreadPoolExecutor(max_workers=4) as pool:
        paths = [e.real_path or e.path for e in entries]
        for entry, h in zip(entries, pool.map(content_hash, paths, [e.path for e in entries])):
            out[entry.path] = h
            progress.update(1)
    progress.close()
    return out
