"""The locked entry point: one job at a time, recorded in the jobs table.

SIGTERM ends a job like Ctrl-C; a full disk anywhere becomes one :class:`DiskFull` line.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sqlite3
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from indexer.disk import DiskFull, disk_full_cause
from indexer.index_run import Indexer
from indexer.lock import JobLock
from indexer.options import Counts, Options
from indexer.runner import EmbedRunner
from search.errors import InvalidValue
from search.media.files import shown
from search.paths import Paths
from search.vectors.live import IndexDir

if TYPE_CHECKING:
    from search.encoders.protocol import ImageTextEncoder as Encoder

log = logging.getLogger("glimpse.indexer")


def run_job(
    paths: Paths,
    roots: Sequence[str] | None,
    opts: Options,
    encoder: Encoder | None = None,
    runner: EmbedRunner | None = None,
) -> tuple[Counts, str | None]:
    """Take the lock, record the job, run it. Raises LockHeld if another job runs.

    SIGTERM (``systemctl stop``, a timer's timeout) ends the job like Ctrl-C:
    committed batches stay, the job row says "interrupted", the next run resumes.
    A full disk anywhere raises :class:`DiskFull` (one line for the user).
    ``runner``: what embeds the images (default: :class:`indexer.runner.LocalRunner`).
    """
    live_before = IndexDir(paths.index).current_version()
    try:
        paths.ensure()
        with JobLock(paths.lock), _sigterm_as_interrupt():
            return _run_locked(paths, roots, opts, encoder, runner)
    except Exception as exc:
        full = _as_disk_full(exc, paths, live_unchanged=IndexDir(paths.index).current_version() == live_before)
        if full is None or full is exc:
            raise
        raise full from exc


def _as_disk_full(exc: BaseException, paths: Paths, live_unchanged: bool = True) -> DiskFull | None:
    """``exc`` as the user-facing DiskFull when it says the disk is full, else None.

    The publish step raises DiskFull itself; anything else is SQLite (the database) or a file
    the run writes (an OSError, naming it when it can).
    """
    if isinstance(exc, DiskFull):
        return exc
    cause = disk_full_cause(exc)
    if cause is None:
        return None
    if isinstance(cause, sqlite3.Error):
        return DiskFull(paths.db, "writing the database", live_unchanged=live_unchanged)
    filename = getattr(cause, "filename", None)
    return DiskFull(
        filename or paths.home, f"writing {filename}" if filename else "indexing", live_unchanged=live_unchanged
    )


def _run_locked(
    paths: Paths, roots: Sequence[str] | None, opts: Options, encoder: Encoder | None, runner: EmbedRunner | None
) -> tuple[Counts, str | None]:
    indexer = Indexer(paths, opts, encoder, runner)
    store = indexer.store
    try:
        store.mark_interrupted_jobs()
        if roots is None:
            roots = [r.path for r in store.roots()]
            if not roots:
                raise InvalidValue("no folders are known yet: run `glimpse index PATH` first")
        indexer.check_options()  # a usage mistake is not a failed job
        # A job that did not end "ok" may have committed batches without publishing them.
        last = store.recent_jobs(1)
        force_publish = bool(last) and last[0].outcome != "ok"
        if force_publish:
            log.info(
                "previous job #%d ended %s: resuming it, and publishing even if nothing else changed",
                last[0].id,
                last[0].outcome,
            )
        job_id = indexer.job_id = store.start_job(opts.kind)
        try:
            counts = indexer.run(roots, force_publish=force_publish)
        except BaseException as exc:
            outcome = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            error = _as_disk_full(exc, paths) or exc
            if indexer.warnings.summary():
                log.warning("%s", indexer.warnings.summary())
            try:  # best effort: the database may be what failed (a full disk)
                store.finish_job(
                    job_id,
                    outcome,
                    message=shown(f"{error.__class__.__name__}: {error}")[:2000],
                    warnings=indexer.warnings.as_text(),
                    **indexer.counts.as_job_fields(),
                )
            except Exception as record_exc:  # noqa: BLE001 - the original error is the one to report
                log.warning("could not record job #%d as %s: %s", job_id, outcome, str(record_exc).splitlines()[0])
            if error is not exc:
                raise error from exc
            raise
        version = IndexDir(paths.index).current_version()
        msg = (
            ("unavailable roots: " + ", ".join(map(shown, counts.unavailable_roots)))
            if counts.unavailable_roots
            else None
        )
        store.finish_job(
            job_id,
            "ok",
            index_version=version,
            message=msg,
            warnings=indexer.warnings.as_text(),
            **counts.as_job_fields(),
        )
        if indexer.warnings.summary():
            log.warning("%s", indexer.warnings.summary())
        log.info(
            "job #%d ok: %d new, %d changed, %d moved, %d deleted, %d failed, %d embedded; index version %s",
            job_id,
            counts.new,
            counts.changed,
            counts.moved,
            counts.deleted,
            counts.failed,
            counts.embedded,
            version,
        )
        return counts, version
    finally:
        store.close()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
