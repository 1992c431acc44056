"""What a job is asked to do (:class:`Options`) and what it did (:class:`Counts`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from search.store.schema import JOB_COUNTS


@dataclass
class Options:
    model: str | None = None
    pretrained: str | None = None
    reembed: bool = False
    captions: str | None = None
    batch_size: int | None = None
    workers: int | None = None
    device: str | None = None
    quantize: str | None = None  # "int8": ONNX Runtime int8 image tower (CPU)
    decode: str | None = None  # where JPEGs are decoded: auto (GPU when encoding on one), gpu, cpu
    kind: str = "index"
    # The roots being indexed accept symlinked files leading anywhere; None keeps what each root recorded.
    follow_external_links: bool | None = None
    # Build the FAISS index from scratch (retrain) instead of updating the live version's.
    rebuild_index: bool = False
    # Read the text inside images after publish (None: GLIMPSE_OCR); read every image again; stop
    # reading after this many minutes (newest images first; the next run carries on).
    ocr: bool | None = None
    reocr: bool = False
    ocr_budget: float | None = None


@dataclass
class Counts:
    """What a job did. Committed work (new, changed, moved, deleted, failed, embedded, captions) is
    counted in the transaction that commits it, so the job row never says more or less than the
    database holds, however the job ends."""

    scanned: int = 0
    new: int = 0
    changed: int = 0
    moved: int = 0
    deleted: int = 0
    failed: int = 0
    unchanged: int = 0
    embedded: int = 0
    captions: int = 0
    # Videos: indexed (their frames written), frames kept, failed (also in ``failed``), skipped (no video
    # stream, or not read: no PyAV, GLIMPSE_VIDEO off). A video is a file: ``new``/``changed`` count it too.
    videos: int = 0
    frames: int = 0
    videos_failed: int = 0
    videos_skipped: int = 0
    unavailable_roots: list[str] = field(default_factory=list)
    captions_removed: int = 0  # sidecar captions that went: the caption index must drop them (not a job field)

    def as_job_fields(self) -> dict:
        return {k: getattr(self, k) for k in JOB_FIELDS}


JOB_FIELDS = JOB_COUNTS  # one list of a run's counts, kept beside the table that holds them
