"""The (re)index job: scan → diff → hash → reuse → embed → write → publish.

The names the CLI, the tests and the benchmarks import; each stage lives in its own module:

- ``indexer.plan``: scan the roots, diff against the stored rows → a ``Plan``
- ``indexer.runner``: the ``EmbedRunner`` seam and the ``LocalRunner`` (decode workers, encode streams)
- ``indexer.pixels``: where JPEGs are decoded (workers or nvJPEG) and batches become encoder input
- ``indexer.writer``: commits the plan, embedded batches and captions, with the job's counts
- ``indexer.publish``: rebuilds and publishes the FAISS index; writes the ONNX query bundle
- ``indexer.model``: the model check and the encoder; ``indexer.index_run``: the stages in order
- ``indexer.job``: the lock, signals and job rows around a run (``run_job``)
"""

from __future__ import annotations

from indexer.index_run import Indexer
from indexer.job import run_job
from indexer.model import ModelMismatch
from indexer.options import JOB_FIELDS, Counts, Options
from indexer.pixels import batch_pixels, decode_mode, gpu_decode_steps, raw_batch_workers
from indexer.runner import CPU_BATCH, EmbedRunner, LocalRunner, encode_streams

__all__ = [
    "CPU_BATCH",
    "JOB_FIELDS",
    "Counts",
    "EmbedRunner",
    "Indexer",
    "LocalRunner",
    "ModelMismatch",
    "Options",
    "batch_pixels",
    "decode_mode",
    "encode_streams",
    "gpu_decode_steps",
    "raw_batch_workers",
    "run_job",
]
