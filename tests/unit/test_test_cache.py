"""A pytest run leaves no ``glimpse-test-cache-*`` folder behind, even when a test fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent


def test_pytest_run_removes_its_cache_dir(tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "import os\n\n"
        "def test_cache_exists():\n"
        "    assert os.path.isdir(os.environ['GLIMPSE_CACHE_DIR'])\n\n"
        "def test_fails():\n"
        "    assert False\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GLIMPSE_CACHE_DIR"}
    env.update(TMPDIR=str(scratch), PYTHONPATH=str(TESTS))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-q", "-p", "no:cacheprovider", str(probe)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "1 failed, 1 passed" in proc.stdout, proc.stdout + proc.stderr
    assert [p.name for p in scratch.iterdir() if p.name.startswith("glimpse-test-cache-")] == []
