"""One index run, stage by stage: model → scan → diff (plan) → apply → embed → captions →
publish → query bundle → pixel prints → text (OCR). Each stage lives in its own module; this file only wires them.

Rows and vectors are committed one batch per transaction, so a crash loses at
most one batch and the next run resumes where this one stopped. The FAISS
index is rebuilt from stored vectors and published atomically at the end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from indexer.captions import load_manifest
from indexer.disk import disk_full_cause
from indexer.model import ModelStage
from indexer.ocr import read_texts
from indexer.options import Counts, Options
from indexer.pixel_prints import backfill_pixel_prints
from indexer.pixels import check_decode_option
from indexer.plan import ToEmbed, diff, scan, video_skip_reason
from indexer.progress import bar
from indexer.publish import publish, write_query_bundle
from indexer.run_warnings import RunWarnings
from indexer.runner import EmbedRequest, EmbedRunner, LocalRunner
from indexer.scan import LinkPolicy
from indexer.video_stage import VideoStage
from indexer.writer import Writer
from search.encoders.model_spec import ModelSpec
from search.media.video import is_video_path
from search.paths import Paths
from search.settings import settings
from search.store.database import ROOT, Store

if TYPE_CHECKING:
    from search.encoders.protocol import ImageTextEncoder as Encoder

log = logging.getLogger("glimpse.indexer")
# Most rows one commit takes when batches queue behind a busy database (bounds what a crash can lose
# and what waits in memory): measured 970 rows/s committed 32 at a time, 4,400 at 512.
GROUP_COMMIT_MAX = 2048


class Indexer:
    """Runs one job against one GLIMPSE_HOME. Use :func:`indexer.job.run_job` for the locked entry point.

    ``runner``: what turns files into vectors (default: a :class:`LocalRunner` on the encoder).
    """

    def __init__(self, paths: Paths, opts: Options, encoder: Encoder | None = None, runner: EmbedRunner | None = None):
        self.paths = paths
        self.opts = opts
        self.store = Store(paths.db)
        self.model = ModelStage(self.store, opts, encoder)
        self.runner = runner
        self.counts = Counts()
        self.writer = Writer(self.store, self.counts)
        self.links = LinkPolicy()  # where symlinked files and sidecars may lead; set by the scan
        self.warnings = RunWarnings()

    @property
    def job_id(self) -> int | None:
        """The jobs row kept in step with every commit (run_job sets it)."""
        return self.writer.job_id

    @job_id.setter
    def job_id(self, value: int | None) -> None:
        self.writer.job_id = value

    def check_options(self) -> None:
        """Refuse `--decode gpu` before scanning when no GPU decoder can run."""
        check_decode_option(self.opts.decode, self.opts.device)

    def run(self, roots: Sequence[str], force_publish: bool = False) -> Counts:
        """Bring the store and the index up to date with ``roots``.

        ``force_publish``: publish even if this run changed nothing, because an
        earlier run may have committed batches and died before publishing.
        """
        spec = self.model.resolve()
        manifest = load_manifest(self.opts.captions, roots, warn=self.warnings.add) if self.opts.captions else None
        root_ids = {
            os.path.abspath(r): self.store.ensure_root(os.path.abspath(r), self.opts.follow_external_links)
            for r in roots
        }
        states = self.store.file_states()
        found = scan(self.store, root_ids, {s[ROOT] for s in states.values()}, self.warnings.add)
        self.links = found.links
        self.counts.unavailable_roots.extend(found.unavailable)
        self.counts.scanned = len(found.seen)
        if found.skipped_videos:  # counted, never a failure; rows of videos indexed before are kept
            self.counts.videos_skipped += len(found.skipped_videos)
            self.warnings.add(f"{len(found.skipped_videos)} videos skipped: {video_skip_reason()}")
        plan = diff(found, states, self.store)
        del states, found
        self.counts.unchanged += plan.unchanged
        self.writer.apply_plan(plan)
        if plan.embed:
            self.writer.changed_ids = plan.changed_ids
            images = [it for it in plan.embed if not is_video_path(it.entry.path)]
            videos = [it for it in plan.embed if is_video_path(it.entry.path)]
            if images:
                self._embed(spec, images)
            if videos:
                self._embed_videos(spec, videos)
        self.writer.sync_captions(manifest, plan.sidecars, self.links, self.warnings)
        self._embed_captions(spec)
        publish(
            self.paths,
            self.store,
            spec,
            self.counts,
            lambda: self.model.encoder(spec).dim,
            force_publish,
            encode_texts=lambda texts: self.model.encoder(spec).encode_texts(texts),
            rebuild=self.opts.rebuild_index,
        )
        write_query_bundle(self.model.loaded)
        # After publish: search works meanwhile, and a stop here loses nothing but the batch in flight.
        backfill_pixel_prints(self.store, self.opts.workers)
        self._read_texts()
        return self.counts

    def _read_texts(self) -> None:
        """The OCR stage (indexer/ocr.py), last: a failure in it is a warning, the run and its index stand."""
        on = self.opts.ocr if self.opts.ocr is not None else settings()["GLIMPSE_OCR"]
        if not on:
            return
        try:
            read_texts(
                self.store,
                reocr=self.opts.reocr,
                budget_minutes=self.opts.ocr_budget,
                warn=self.warnings.add,
                job_id=self.job_id,
            )
        except Exception as exc:  # a stage after publish: reported, the next run retries
            if disk_full_cause(exc) is not None:
                raise
            self.warnings.add(f"text reading stopped: {exc.__class__.__name__}: {exc}")

    def _embed(self, spec: ModelSpec, items: list[ToEmbed]) -> None:
        """Embed (the runner) -> write (a writer thread), overlapped: the writer commits batch N
        while the runner works on the next ones, in input order; batches that arrive while a
        commit runs are committed together next (up to GROUP_COMMIT_MAX rows). A crash loses at
        most the batches not yet committed, never a committed one."""
        runner = self.runner
        if runner is None:
            runner = LocalRunner(self.model.encoder(spec), self.opts)
        else:
            enc = self.model.encoder(spec)  # the model row names the model the vectors come from
            prepare = getattr(runner, "prepare", None)  # a remote runner ships this model to its workers
            if prepare is not None:
                prepare(enc)
        progress = bar(len(items), "embedding")
        # Read where the walk checked it; hash only what the plan did not.
        requests = [EmbedRequest(it.entry.real_path or it.entry.path, it.entry.size, not it.hashed) for it in items]
        write_s = 0.0
        commits = 0
        t_start = time.perf_counter()

        def timed_write(group: list) -> None:
            nonlocal write_s, commits
            t0 = time.perf_counter()
            self.writer.write_batches(items, group)
            progress.update(sum(len(b.items) for b in group))
            write_s += time.perf_counter() - t0
            commits += 1

        pending = None  # the write in progress
        queued: list = []  # batches that arrived while it ran: they go together in the next commit
        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="glimpse-writer") as writer,
            contextlib.closing(runner.run(requests)) as batches,
        ):
            try:
                for batch in batches:
                    queued.append(batch)
                    writing = pending is not None and not pending.done()
                    if writing and sum(len(b.items) for b in queued) < GROUP_COMMIT_MAX:
                        continue  # a commit costs ~25 ms whatever its size: fewer, larger ones keep up
                    if pending is not None:
                        pending.result()  # re-raises a write error; bounds what waits to be written
                    pending, queued = writer.submit(timed_write, queued), []
                if pending is not None:
                    pending.result()
                if queued:  # what arrived during the last commit; the writer thread is idle now
                    timed_write(queued)
            except BaseException:
                batches.close()  # the runner stops; batches it still encodes are dropped (the next run embeds them)
                if pending is not None and not pending.done():
                    pending.result()  # let the write in progress finish
                raise
        progress.close()
        for line in getattr(runner, "warnings", list)():  # e.g. a cluster's worker restarts: kept in the job record
            self.warnings.add(line)
        took = time.perf_counter() - t_start
        # Which stage bounds the run: the one whose busy time is closest to the wall time.
        busy = {**runner.busy(), "database writes": write_s}
        log.info(
            "embedded %d images in %.1fs (%.1f img/s); busy: %s; %d commits",
            len(items),
            took,
            len(items) / max(took, 1e-9),
            ", ".join(f"{stage} {s:.1f}s" for stage, s in busy.items()),
            commits,
        )

    def _embed_videos(self, spec: ModelSpec, items: list[ToEmbed]) -> None:
        """Videos: read in worker processes here, their frames encoded by this run's encoder, one
        commit per video (indexer/video_stage.py). A remote runner embeds images only."""
        if self.runner is not None:
            log.info("%d videos are read and embedded on this machine (the runner embeds images)", len(items))
        VideoStage(self.writer, self.model.encoder(spec), self.opts).run(items)

    def _embed_captions(self, spec: ModelSpec) -> None:
        """Embed the stored captions that have no vector yet, 256 per transaction."""
        todo = self.store.captions_without_vectors()
        if not todo:
            return
        enc = self.model.encoder(spec)
        progress = bar(len(todo), "captions", unit="cap")
        for i in range(0, len(todo), 256):
            chunk = todo[i : i + 256]
            self.writer.write_caption_vectors([cid for cid, _ in chunk], enc.encode_texts([t for _, t in chunk]))
            progress.update(len(chunk))
        progress.close()
