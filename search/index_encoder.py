"""The encoder `glimpse index` embeds with: on CPU, the model's torch-free ONNX bundle when it has one.

Importing torch and open_clip and building the model cost ~7 s of every `glimpse index`
start on a 2-core machine, and tearing torch down ~1 s more at exit (BENCHMARKS.md): a
nightly reindex that finds a handful of new photos would spend most of its time there. The
query bundle (``search.query_bundle``) holds the same towers, exported from the same weights
and checked against torch, so on CPU the indexer embeds through it. Torch is loaded when there
is no bundle yet (the first run with a model builds one), when a GPU may be used, or with
GLIMPSE_RUNTIME=torch.
"""

from __future__ import annotations

import logging
import os
import sys

from search.model_spec import ModelSpec
from search.ort_session import quantize_setting, runtime_setting

log = logging.getLogger(__name__)


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


def open_index_encoder(spec: ModelSpec, device: str | None = None, quantize: str | None = None,
                       ort_threads: int | None = None):
    """The bundle's ``OnnxQueryEncoder`` (sessions opened on first use) or a torch ``Encoder``."""
    runtime, quantize = runtime_setting(), quantize_setting(quantize)
    if runtime in ("auto", "onnx") and quantize in (None, "int8") and _runs_on_cpu(device):
        from search.query_bundle import open_bundle

        enc = open_bundle(spec, threads=ort_threads, quantize=quantize, eager=False)
        if enc is not None:
            log.info("model %s loaded on cpu from its ONNX Runtime bundle %s (%s, no torch), dimension %d",
                     spec.describe(), enc.folder, enc.backend, enc.dim)
            return enc
    from search.encoder import Encoder

    return Encoder(spec, device=device, quantize=quantize, ort_threads=ort_threads)
