"""ONNX Runtime sessions configured for a small shared machine (no torch import)."""

from __future__ import annotations

import os

import numpy as np


def cpu_threads() -> int:
    """Threads for one ONNX Runtime session: GLIMPSE_THREADS, else the CPUs this process may use."""
    configured = os.environ.get("GLIMPSE_THREADS")
    if configured:
        return max(1, int(configured))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


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
