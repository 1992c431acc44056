"""What every encoder provides, and the one place that chooses which encoder to load.

Two kinds implement :class:`ImageTextEncoder`: ``search.encoders.torch_clip.Encoder`` (open_clip in
torch, any device) and ``search.encoders.onnx_bundle.OnnxQueryEncoder`` (both towers in ONNX
Runtime on CPU, no torch import). :func:`open_encoder` picks one. This module imports
neither torch nor the torch encoder at import time: a server querying through the
bundle, and ``glimpse index`` on CPU, must stay torch-free (tests/test_index_without_torch.py).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from search.encoders.model_spec import ModelSpec
from search.encoders.ort_session import quantize_setting, runtime_setting

log = logging.getLogger(__name__)

Purpose = Literal["query", "index"]


@runtime_checkable
class ImageTextEncoder(Protocol):
    """A loaded CLIP-style model: unit-length float32 vectors for texts and images.

    Images enter either as PIL images (``encode_pil``) or, on the indexer's batch path, as
    uint8 NHWC pixels already through ``pil_transform`` (``encode_pixels``).
    """

    @property
    def spec(self) -> ModelSpec: ...

    @property
    def device(self) -> str:
        """ "cpu", or a torch device name such as "cuda:0" (the torch encoder only)."""

    @property
    def precision(self) -> str: ...

    @property
    def backend(self) -> str:
        """What runs the image tower: "torch", "onnx" or "onnx-int8"."""

    @property
    def dim(self) -> int: ...

    @property
    def image_size(self) -> int: ...

    @property
    def pil_transform(self) -> Callable[[Image.Image], Image.Image]:
        """The PIL part of the model's preprocessing (resize, crop); runs where images are decoded."""

    def image_gflops(self) -> float | None:
        """Counted GFLOPs of one image through the image tower (None: not recorded)."""

    def start_batch_runtime(self) -> None:
        """Get the batch image tower ready now (the indexer overlaps this with decode workers' start)."""

    def encode_pixels(self, batch: Any) -> np.ndarray:
        """Encode a uint8 NHWC batch: a numpy array, or a torch tensor for the torch encoder."""

    def encode_pil(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...


def open_encoder(
    spec: ModelSpec,
    purpose: Purpose = "query",
    device: str | None = None,
    quantize: str | None = None,
    ort_threads: int | None = None,
) -> ImageTextEncoder:
    """The encoder for ``spec``: the ONNX query bundle where it can serve, else torch.

    ``purpose="query"`` (a server, ``glimpse search``): on CPU (the default unless a
    device is named) the ONNX bundle, built from torch on first use when missing.
    ``purpose="index"`` (``glimpse index``): the bundle when it exists and the run is on
    CPU (sessions open on first use); the indexer builds a missing bundle after publishing.
    ``GLIMPSE_RUNTIME=torch``, a GPU, or no usable bundle: the torch ``Encoder``.
    ``quantize`` (else GLIMPSE_QUANTIZE) "int8" quantizes the image tower; a query
    encoder then is the torch one (its image tower in ONNX Runtime, int8).
    """
    if purpose == "query":
        return _query_encoder(spec, device, quantize, ort_threads)
    if purpose == "index":
        return _index_encoder(spec, device, quantize, ort_threads)
    raise ValueError(f"unknown encoder purpose {purpose!r}: use 'query' or 'index'")


def _query_encoder(
    spec: ModelSpec, device: str | None, quantize: str | None, ort_threads: int | None
) -> ImageTextEncoder:
    from search.encoders.onnx_bundle import OnnxQueryEncoder, ensure_bundle, open_bundle

    runtime = runtime_setting()
    onnx_ok = runtime in ("auto", "onnx") and device in (None, "auto", "cpu") and quantize_setting(quantize) is None
    if onnx_ok:
        q = open_bundle(spec, threads=ort_threads)
        if q is not None:
            log.info("query model %s: ONNX Runtime bundle %s (no torch)", spec.describe(), q.folder)
            return q
    from search.encoders.torch_clip import Encoder

    enc = Encoder(spec, device=device, quantize=quantize, ort_threads=ort_threads)
    if onnx_ok and enc.device == "cpu":
        try:
            q = OnnxQueryEncoder(ensure_bundle(enc), threads=ort_threads)
            log.info("query model %s: ONNX Runtime bundle built; later starts skip torch", spec.describe())
            return q
        except Exception as exc:  # torch still answers queries
            if runtime == "onnx":
                raise
            log.warning("no ONNX query bundle (%s: %s); queries run in torch", exc.__class__.__name__, exc)
    return enc


def _index_encoder(
    spec: ModelSpec, device: str | None, quantize: str | None, ort_threads: int | None
) -> ImageTextEncoder:
    runtime, quantize = runtime_setting(), quantize_setting(quantize)
    if runtime in ("auto", "onnx") and quantize in (None, "int8") and _runs_on_cpu(device):
        from search.encoders.onnx_bundle import open_bundle

        enc = open_bundle(spec, threads=ort_threads, quantize=quantize, eager=False)
        if enc is not None:
            log.info(
                "model %s loaded on cpu from its ONNX Runtime bundle %s (%s, no torch), dimension %d",
                spec.describe(),
                enc.folder,
                enc.backend,
                enc.dim,
            )
            return enc
    from search.encoders.torch_clip import Encoder

    return Encoder(spec, device=device, quantize=quantize, ort_threads=ort_threads)


def gpu_device_nodes() -> bool:
    """False only where no GPU can be present (Linux without NVIDIA or AMD device nodes), so the
    choice of CPU needs no torch import; True means "ask torch"."""
    if sys.platform.startswith("linux"):
        return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg"))
    return True


def _runs_on_cpu(device: str | None) -> bool:
    if device == "cpu":
        return True
    if device not in (None, "auto"):
        return False
    if not gpu_device_nodes():
        return True
    import torch

    return not torch.cuda.is_available()
