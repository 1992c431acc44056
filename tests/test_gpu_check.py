"""`python bench/gpu.py --check --dry-run`: every check of the GPU command runs on the CPU at toy sizes, so
that the command a GPU machine runs (bench/gpu_check.py) cannot rot where CI has no GPU. The figures of a
dry run mean nothing; that every path runs, prints one table and writes its JSON does."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_gpu_check_runs_on_the_cpu_and_writes_one_table_and_json(tmp_path):
    out = tmp_path / "check.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.run(
        [sys.executable, "bench/gpu.py", "--check", "--dry-run", "--data", str(tmp_path / "data"), "--json", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    report = json.loads(out.read_text())
    assert report["mode"] == "dry-run (CPU)" and report["ok"] is True
    rows = report["rows"]
    assert {r["check"] for r in rows} == {"stack", "faiss", "encode", "nvjpeg", "index", "search10m"}
    assert not [r for r in rows if r["status"] == "FAIL"], rows
    ray = [r for r in rows if r["check"] == "index"]
    if importlib.util.find_spec("ray") is not None:  # the dev install has it: Ray against local, for real
        assert ray and ray[-1]["status"] == "ok" and ray[-1]["data"]["cosine_min"] >= 0.999, ray
    # One table on stdout, a line per row.
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| check | metric |") and len(table) == len(rows) + 1
