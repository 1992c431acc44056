"""Old name of ``search.encoders.open_encoder(spec, purpose="index")``.

Kept only while indexer/pipeline.py imports it (issue 13 splits that file); new code
calls :func:`search.encoders.open_encoder`.
"""

from __future__ import annotations

from search.encoders import ImageTextEncoder, open_encoder
from search.model_spec import ModelSpec


def open_index_encoder(spec: ModelSpec, device: str | None = None, quantize: str | None = None,
                       ort_threads: int | None = None) -> ImageTextEncoder:
    return open_encoder(spec, "index", device=device, quantize=quantize, ort_threads=ort_threads)
