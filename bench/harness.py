"""What bench/run.py and bench/peers.py share: the model they time, running a timed command, its conditions.

Its own module so that neither imports the other (bench/run.py runs the peers' section).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bench.memwatch import TreeWatch

REPO = Path(__file__).resolve().parent.parent
MODEL, PRETRAINED = "ViT-B-32", "none"


def cond_str(note: dict) -> str:
    s = f"load {note.get('load_before', '?')}"
    if "other_cores" in note:
        s += f", others {note['other_cores']} cores"
    return s


def glimpse_cmd(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "glimpse.cli", "--home", str(home), *args]


def run_timed(cmd: list[str], env: dict | None = None, watch: bool = True) -> dict:
    """Run a command, return wall time, exit code, output and peak memory of its process tree."""
    import resource

    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    if watch:
        with TreeWatch(proc.pid) as w:
            out, err = proc.communicate()
    else:
        out, err = proc.communicate()
        w = None
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)  # the command and its waited-for workers
    res = {"wall_s": wall, "cpu_s": cpu, "rc": proc.returncode, "stdout": out, "stderr": err}
    if w is not None:
        res.update(peak_rss_mib=w.peak_rss_mib, peak_pss_mib=w.peak_pss_mib, main_hwm_mib=w.peak_main_hwm_mib)
    return res


def ensure_query_bundle(int8: bool = False) -> None:
    """The model's ONNX bundle (and its int8 tower), which the first `glimpse index` with a model
    builds once; timed runs measure the runs after it."""
    from search.encoders.model_spec import ModelSpec
    from search.encoders.onnx_bundle import OnnxQueryEncoder, bundle_dir, ensure_bundle

    folder = bundle_dir(ModelSpec.parse(MODEL, PRETRAINED))
    if not os.path.isfile(os.path.join(folder, "meta.json")):
        from search.encoders.torch_clip import Encoder

        ensure_bundle(Encoder(ModelSpec.parse(MODEL, PRETRAINED), device="cpu"))
    if int8:
        OnnxQueryEncoder(folder, quantize="int8", eager=False).start_batch_runtime()
