"""What the engine reports about itself: ``health`` (no SQL, no model) and ``stats``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from search.media.files import shown
from search.settings import settings
from search.store.ocr import engine_id
from search.store.schema import JOB_COUNTS

if TYPE_CHECKING:
    from search.store.database import Store
    from search.store.schema import JobRow
    from search.vectors.live import LoadedIndex

JOB_FIELDS = ("id", "kind", "outcome", *JOB_COUNTS, "index_version", "message", "ocr_read", "ocr_failed", "ocr_seconds")


def health(live: LoadedIndex | None) -> dict:
    """Liveness: what the live index serves."""
    return {
        "status": "ok",
        "images_indexed": int(live.images.ntotal) if live else 0,
        "index_version": live.version if live else None,
    }


def stats(store: Store, live: LoadedIndex | None, failed_limit: int | None = 50) -> dict:
    """``images_indexed`` counts rows embedded in the database, ``images_in_live_index`` what
    searches see: they differ while a run that committed batches has not published."""
    model = store.get_model()
    return {
        **store.counts(),
        "images_in_live_index": int(live.images.ntotal) if live else 0,
        "model": None
        if model is None
        else {"name": model.name, "pretrained": model.pretrained, "fingerprint": model.fingerprint, "dim": model.dim},
        "index_version": live.version if live else None,
        "index_type": live.manifest.get("index_type", {}).get("type") if live else None,
        "failed": [{"path": shown(p), "error": e} for p, e in store.failed_images(failed_limit)],
        "roots": [
            {
                "path": shown(r.path),
                "available": r.available,
                "follow_external_links": r.follow_external_links,
                # an older home's root that held images under folder links leading outside: those are still followed
                "follow_external_folder_links": r.follow_external_folder_links,
                # when the folder was last found mounted: tells an unplugged drive from a deleted folder
                "last_seen_at": r.last_seen_at.isoformat() if r.last_seen_at else None,
            }
            for r in store.roots()
        ],
        "jobs": [job_dict(j) for j in store.recent_jobs(10)],
        "ocr": ocr_stats(store),
    }


def ocr_stats(store: Store) -> dict:
    """Text inside images: images read (``failed``: of those, not readable), with text, still pending for
    the installed reader, and that reader (None: RapidOCR not installed); ``on``: GLIMPSE_OCR."""
    engine = engine_id()
    return {"on": settings()["GLIMPSE_OCR"], "engine": engine, **store.ocr_counts(engine)}


def job_dict(job: JobRow) -> dict:
    out = {f: getattr(job, f) for f in JOB_FIELDS}
    out["warnings"] = job.warnings.splitlines() if job.warnings else []
    out["started_at"] = job.started_at.isoformat() if job.started_at else None
    out["finished_at"] = job.finished_at.isoformat() if job.finished_at else None
    return out
