"""ONNX Runtime sessions configured for a small shared machine (no torch import)."""

from __future__ import annotations

import logging
import os

import numpy as np

from search.settings import settings

log = logging.getLogger(__name__)


def cpu_threads() -> int:
    """Threads for one ONNX Runtime session: GLIMPSE_THREADS, else the CPUs this process may use."""
    configured = settings()["GLIMPSE_THREADS"]
    if configured:
        return configured
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def runtime_setting(runtime: str | None = None) -> str:
    """The runtime asked for: ``runtime``, else GLIMPSE_RUNTIME, else "auto" (lower case)."""
    return (runtime or settings()["GLIMPSE_RUNTIME"]).lower()


def quantize_setting(quantize: str | None = None) -> str | None:
    """The image-tower quantization asked for: ``quantize``, else GLIMPSE_QUANTIZE, else None."""
    return (quantize or settings()["GLIMPSE_QUANTIZE"] or "").lower() or None


def cpu_session(path: str, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, threads or cpu_threads())
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    # No busy-waiting between operators: decode workers (and anything else on a small
    # machine) need those cycles; spinning measured slower end to end on 2 cores.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def unit_rows(x: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit length (both ONNX towers' outputs are raw projections)."""
    x = x.astype(np.float32, copy=False)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def probe_pixels(size: int, n: int = 2) -> np.ndarray:
    """A fixed random uint8 NHWC batch: the input every tower check runs on."""
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def ensure_int8(path: str, probe: np.ndarray, min_cos: float = 0.98) -> str:
    """The int8 copy of an fp32 ONNX image tower (dynamic weight quantization), made once beside it.

    Checked against the fp32 tower on ``probe`` (a float input batch): every output vector
    must stay within cosine ``min_cos``; a marker records the check per ONNX Runtime version.
    """
    import onnxruntime

    qpath = path[: -len(".onnx")] + "-int8.onnx"
    if not os.path.exists(qpath):
        from onnxruntime.quantization import QuantType, quantize_dynamic

        log.info("quantizing the ONNX image tower to int8 (once; cached)")
        tmp = f"{qpath}.{os.getpid()}.tmp.onnx"
        try:
            quantize_dynamic(path, tmp, weight_type=QuantType.QInt8)
            os.replace(tmp, qpath)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    marker = f"{qpath}.verified-ort{onnxruntime.__version__}-{min_cos}"
    if not os.path.exists(marker):
        want, got = (unit_rows(run_session(cpu_session(p), probe)) for p in (path, qpath))
        cos = float((got * want).sum(axis=1).min())
        if not cos >= min_cos:
            raise RuntimeError(f"int8 image tower too far from float32: cosine {cos:.4f} < {min_cos}")
        try:
            with open(marker, "w") as f:
                f.write("ok\n")
        except OSError:  # read-only cache: check again next time
            pass
    return qpath


def run_session(session, x: np.ndarray) -> np.ndarray:
    """The single output of a one-input ONNX tower for a float batch."""
    (out,) = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})
    return out
