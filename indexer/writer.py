"""Commit the plan and the embedded batches, counting each in the transaction that commits it.

Rows and vectors are committed batch by batch (the batches that arrived while the previous
commit ran go together in the next: a busy database takes fewer, larger transactions), so a
crash loses only batches not yet committed and the next run resumes where this one stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence

import numpy as np

from indexer.captions import MAX_CAPTION_CHARS, ManifestCaptions, cap_caption, sidecar_captions
from indexer.options import JOB_FIELDS, Counts
from indexer.plan import Plan, ToEmbed
from indexer.run_warnings import RunWarnings
from indexer.runner import EmbeddedBatch
from indexer.scan import FileEntry, LinkPolicy
from indexer.video_read import VideoRead, exif_time
from search.media.files import shown
from search.media.video import is_video_path
from search.store.database import Store, Transaction
from search.store.schema import pack_vector, utcnow

log = logging.getLogger("glimpse.indexer")
NO_VIDEO_STREAM = "no video stream (audio only): skipped"


def file_values(item: ToEmbed, read_hash: str | None) -> dict:
    """The row values every indexed file gets from its listing: where it is, its size and times, its hash
    (hashed once: up front by the plan, or by the reader that held the bytes)."""
    entry, root_id, _, planned_hash, _ = item
    return dict(
        path=entry.path,
        real_path=entry.real_path,
        root_id=root_id,
        size=entry.size,
        mtime=entry.mtime,
        content_hash=planned_hash or read_hash,
        indexed_at=utcnow(),
    )


class Writer:
    """The only stage that writes rows; keeps ``counts`` and the job row in step with the database."""

    def __init__(self, store: Store, counts: Counts, job_id: int | None = None):
        self.store = store
        self.counts = counts
        self.job_id = job_id  # the jobs row kept in step with every commit (None: no job row)
        self.changed_ids: set[int] = set()  # rows the diff found changed: their re-embedding counts as "changed"

    @contextlib.contextmanager
    def _commit(self) -> Iterator[tuple[Transaction, dict[str, int]]]:
        """One write transaction, yielding ``(session, delta)``: count into ``delta`` what the
        transaction commits. The job row gets the new counts in the same transaction (a kill -9
        leaves it true), and ``self.counts`` gets them only once the commit succeeded."""
        delta = dict.fromkeys(JOB_FIELDS, 0)
        with self.store.transaction() as s:
            yield s, delta
            if self.job_id is not None and any(delta.values()):
                self.store.set_job_counts(s, self.job_id, **{k: getattr(self.counts, k) + v for k, v in delta.items()})
        for k, v in delta.items():
            setattr(self.counts, k, getattr(self.counts, k) + v)

    def apply_plan(self, plan: Plan) -> None:
        """Touches, relinks, moves, copies, refused entries and deletions: one transaction."""
        store = self.store
        with self._commit() as (s, delta):
            for row_id, entry in plan.touch:
                store.set_file_stat(s, row_id, entry.size, entry.mtime, entry.real_path)
            for row_id, entry in plan.relink:
                store.set_real_path(s, row_id, entry.real_path)
            for row_id, entry, root_id in plan.moves:
                store.move_image(s, row_id, entry.path, entry.real_path, root_id, entry.size, entry.mtime)
            for src_id, entry, root_id, h in plan.copies:
                store.copy_image(s, src_id, entry.path, entry.real_path, root_id, entry.size, entry.mtime, h)
            refused_rows: list[dict] = []
            refused_updates: list[tuple[int, dict]] = []
            for entry, root_id, refused_id in plan.refused:
                log.warning("failed: %s: %s", entry.path, entry.error)
                # The walk's reason; nothing read, nothing kept from what the path held before.
                values = dict(
                    path=entry.path,
                    real_path=None,
                    root_id=root_id,
                    size=entry.size,
                    mtime=entry.mtime,
                    content_hash=None,
                    width=None,
                    height=None,
                    format=None,
                    taken_at=None,
                    status="failed",
                    error=entry.error,
                    vector=None,
                    indexed_at=utcnow(),
                )
                if is_video_path(entry.path):  # a video row: frames it had before go with its old content
                    store.write_video(s, refused_id, values)
                    delta["new" if refused_id is None else "changed"] += 1
                    delta["videos_failed"] += 1
                elif refused_id is None:
                    refused_rows.append(values)
                else:
                    refused_updates.append((refused_id, values))
            store.write_images(s, refused_rows, refused_updates)
            gone_ids = list(plan.gone.values())
            store.delete_images(s, gone_ids)
            delta.update(
                moved=len(plan.moves),
                new=delta["new"] + len(plan.copies) + len(refused_rows),
                changed=delta["changed"] + len(refused_updates),
                failed=len(plan.refused),
                deleted=len(gone_ids),
            )
        if plan.moves or plan.copies:
            log.info("reused vectors for %d moved and %d copied files", len(plan.moves), len(plan.copies))

    def write_batches(self, items: list[ToEmbed], batches: Sequence[EmbeddedBatch]) -> None:
        """Embedded batches (one, or those that arrived while the last commit ran): new rows,
        re-embedded rows and failures, in one transaction."""
        vec_of = {b.index: v for batch in batches for b, v in zip(batch.ok, batch.vectors)}
        new_rows, updates = [], []
        with self._commit() as (s, delta):
            for b in (b for batch in batches for b in batch.items):
                entry, _, row_id, _, _ = items[b.index]
                values = file_values(items[b.index], b.content_hash)
                values.update((k, b.meta.get(k)) for k in ("width", "height", "format", "taken_at"))
                if b.error:
                    values.update(status="failed", error=shown(b.error), vector=None, pixel_print=None)
                    delta["failed"] += 1
                    log.warning("failed: %s: %s", entry.path, b.error)
                else:
                    values.update(status="indexed", error=None, vector=pack_vector(vec_of[b.index]))
                    values["pixel_print"] = bytes.fromhex(b.meta["pixel_print"]) if "pixel_print" in b.meta else None
                    delta["embedded"] += 1
                if row_id is None:
                    new_rows.append(values)
                    delta["new"] += 1
                else:
                    updates.append((row_id, values))
                    delta["changed"] += row_id in self.changed_ids
            self.store.write_images(s, new_rows, updates)

    def write_video(self, item: ToEmbed, read: VideoRead, frames: Sequence[tuple[float, np.ndarray]]) -> None:
        """One video: its row (indexed, failed, or skipped when it has no video stream), its kept
        ``frames`` (``(time, vector)``) and the job's counts, in one transaction."""
        entry, _, row_id, _, _ = item
        info = read.info
        values = file_values(item, read.content_hash)
        values.update(
            width=None, height=None, format=read.format, taken_at=None, duration=None, codec=None, poster=None
        )
        if info is not None:
            values.update(taken_at=exif_time(info.created), duration=info.duration)
        with self._commit() as (s, delta):
            if read.error or info is None:
                values.update(status="failed", error=shown(read.error or "not read"))
                delta["failed"] += 1
                delta["videos_failed"] += 1
                log.warning("failed: %s: %s", entry.path, read.error)
                frames = []
            elif not info.has_video:
                values.update(status="skipped", error=NO_VIDEO_STREAM)
                delta["videos_skipped"] += 1
                frames = []
            else:
                width, height = info.display_size
                times = sorted(t for t, _ in frames)
                values.update(
                    status="indexed",
                    error=None,
                    width=width,
                    height=height,
                    codec=info.codec,
                    # the frame a plain thumbnail shows: the middle kept one (the first is often a title or black)
                    poster=times[len(times) // 2] if times else 0.0,
                )
                delta["videos"] += 1
                delta["frames"] += len(frames)
            if row_id is None:
                delta["new"] += 1
            else:
                delta["changed"] += row_id in self.changed_ids
            self.store.write_video(s, row_id, values, frames)

    def sync_captions(
        self, manifest: ManifestCaptions | None, sidecars: Sequence[FileEntry], links: LinkPolicy, warnings: RunWarnings
    ) -> None:
        """Store sidecar + manifest captions for indexed images (vectors come later). The sidecars of
        ``sidecars`` are read again, each replacing what its image held from a sidecar. A manifest row naming
        no indexed image (``../../etc/passwd``, a file that is not there) is a bad row: listed with the others."""
        found: dict[str, tuple[str | None, list[str]]] = {}
        for entry in sidecars:
            caps = sidecar_captions(entry.path, links.allows) if entry.sidecar is not None else []
            found[entry.path] = (entry.sidecar, [_capped(entry.path, c, "sidecar", warnings) for c in caps])
        if found:
            self.counts.captions_removed += self.store.set_sidecar_captions(found)
        wanted: dict[str, list[tuple[str, str]]] = {}
        for path, caps in (manifest.captions if manifest else {}).items():
            wanted.setdefault(path, []).extend((_capped(path, c, "manifest", warnings), "manifest") for c in caps)
        if wanted:
            missing = self.store.add_captions(wanted)
            if manifest is not None:
                _report_unmatched(manifest, missing, [r.path for r in self.store.roots()], warnings)

    def write_caption_vectors(self, ids: list[int], vectors) -> None:
        with self._commit() as (s, delta):
            self.store.set_caption_vectors(s, zip(ids, vectors))
            delta["captions"] += len(ids)


def _report_unmatched(manifest: ManifestCaptions, missing: list[str], roots: list[str], warnings: RunWarnings) -> None:
    """One warning per manifest row (in file order) naming an image that is not indexed."""
    folders = tuple(r.rstrip(os.sep) + os.sep for r in roots)
    for path in sorted((p for p in missing if p in manifest.lines), key=manifest.lines.__getitem__):
        why = "is not an indexed image" if path.startswith(folders) else "lies outside the indexed folders"
        warnings.add(f"{manifest.row_of(path)}: skipped: {path} {why}")


def _capped(path: str, caption: str, source: str, warnings: RunWarnings) -> str:
    """A caption as stored: cut to MAX_CAPTION_CHARS, with a warning when it was longer."""
    if len(caption) > MAX_CAPTION_CHARS:
        warnings.add(f"{path}: {source} caption cut from {len(caption):,} to {MAX_CAPTION_CHARS:,} characters")
    return cap_caption(caption)
