"""`glimpse index|reindex --engine ray`: real Ray on 127.0.0.1, in-process and against a head that
this module starts with `ray start --head` (stopped with `ray stop --force`, also on failure)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import glimpse_cmd, make_images
from indexer.ray_runner import TEST_HOOK_ENV
from search.store.database import Store

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason='Ray is not installed (pip install -e ".[ray]")'
)

RAY = str(Path(sys.executable).parent / "ray")
# Ray's servers on loopback only, no usage report (what `--engine ray` sets for its private cluster).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
N = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head on 127.0.0.1 with 2 CPUs, for the whole module; always stopped."""
    temp = tempfile.mkdtemp(prefix="gr-", dir="/tmp")  # short: Ray's socket paths live under it
    port = _free_port()
    env = dict(os.environ, **RAY_ENV)
    try:
        subprocess.run(
            [
                RAY,
                "start",
                "--head",
                "--node-ip-address=127.0.0.1",
                f"--port={port}",
                "--num-cpus=2",
                "--num-gpus=0",
                "--disable-usage-stats",
                "--include-dashboard=false",
                f"--temp-dir={temp}",
            ],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return Path(make_images(tmp_path_factory.mktemp("ray") / "pics", N)[0]).parent


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory, corpus, tiny_model) -> dict:
    """The reference: `--engine local` on the corpus."""
    home = tmp_path_factory.mktemp("local-home")
    glimpse_cmd("index", str(corpus), "--model", tiny_model, home=home)
    return rows(home)


def rows(home: Path) -> dict[str, tuple]:
    """path -> (status, content hash, width, height, vector) for every image row."""
    store = Store(home / "glimpse.db")
    try:
        out = {}
        dim = store.get_model().dim
        for path in sorted(str(p) for p in Path(store.roots()[0].path).iterdir()):
            row_id = store.image_id_for_path(path)
            if row_id is None:
                continue
            r = store.get_image(row_id)
            vec = store.vectors_of([r.id], dim).get(r.id) if r.status == "indexed" else None
            out[path] = (r.status, r.content_hash, r.width, r.height, vec, r.error)
        return out
    finally:
        store.close()


def assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for path in a:
        assert a[path][:4] == b[path][:4], path
        np.testing.assert_allclose(a[path][4], b[path][4], atol=2e-3)  # within float16 storage


def jobs(home: Path) -> list[tuple]:
    with sqlite3.connect(home / "glimpse.db") as db:
        return db.execute("select outcome, new, changed, embedded, failed, warnings from jobs order by id").fetchall()


def indexed(home: Path) -> int:
    try:
        with sqlite3.connect(home / "glimpse.db", timeout=5) as db:
            return db.execute("select count(*) from images where status = 'indexed'").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_in_process_gives_the_same_rows_and_vectors_as_local(tmp_path, corpus, local_rows, tiny_model):
    home = tmp_path / "home"
    out = glimpse_cmd(
        "index",
        str(corpus),
        "--model",
        tiny_model,
        "--engine",
        "ray",
        "--batch-size",
        "3",
        home=home,
        env={"RAY_ADDRESS": "", "GLIMPSE_RAY_MIN_FILES": "0"},  # always Ray, however few the files
    )
    assert f"{N} new" in out.stdout and f"{N} embedded" in out.stdout
    assert_same(rows(home), local_rows)
    assert "a private Ray cluster on 127.0.0.1" in out.stderr


def _imported(stderr: str) -> set[str]:
    """Every module the command imported (its PYTHONPROFILEIMPORTTIME=1 lines)."""
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_a_small_reindex_without_an_address_embeds_here_starts_no_ray_and_says_why(tmp_path, corpus, tiny_model):
    pics = tmp_path / "pics"
    shutil.copytree(corpus, pics)
    home = tmp_path / "home"
    glimpse_cmd("index", str(pics), "--model", tiny_model, home=home)
    make_images(pics, 5, start=100)
    out = glimpse_cmd(
        "reindex",
        "--engine",
        "ray",
        home=home,
        env={"RAY_ADDRESS": "", "GLIMPSE_RAY_MIN_FILES": "", "PYTHONPROFILEIMPORTTIME": "1"},  # the defaults
    )
    # No Ray process can start without `import ray`: the run never imported it.
    imported = _imported(out.stderr)
    assert imported and not any(m == "ray" or m.startswith("ray.") for m in imported)
    why = [line for line in out.stderr.splitlines() if "without Ray" in line]
    assert len(why) == 1, out.stderr[-3000:]
    assert "embedding 5 file(s) on this machine without Ray: fewer than GLIMPSE_RAY_MIN_FILES=" in why[0]
    assert jobs(home)[-1][:4] == ("ok", 5, 0, 5)
    assert indexed(home) == N + 5


def test_a_head_gives_the_same_vectors_and_incremental_runs_send_only_new_files(
    tmp_path, corpus, local_rows, tiny_model, ray_head
):
    pics = tmp_path / "pics"
    shutil.copytree(corpus, pics)
    home = tmp_path / "home"
    glimpse_cmd("index", str(pics), "--model", tiny_model, "--engine", "ray", "--ray-address", ray_head, home=home)
    assert_same({p.replace(str(pics), str(corpus)): v for p, v in rows(home).items()}, local_rows)

    make_images(pics, 2, start=100)
    out = glimpse_cmd("-v", "reindex", "--engine", "ray", home=home, env={"RAY_ADDRESS": ray_head})
    assert "ray: 2 file(s) to embed" in out.stderr  # a cluster by address is used however few the files
    assert "without Ray" not in out.stderr
    assert jobs(home)[-1][:4] == ("ok", 2, 0, 2)

    # Nothing to embed: Ray is neither imported nor joined (the address leads nowhere).
    out = glimpse_cmd(
        "-v",
        "reindex",
        "--engine",
        "ray",
        "--ray-address",
        "127.0.0.1:9",
        home=home,
        env={"PYTHONPROFILEIMPORTTIME": "1"},
    )
    imported = _imported(out.stderr)
    assert imported and not any(m == "ray" or m.startswith("ray.") for m in imported)
    assert jobs(home)[-1][:4] == ("ok", 0, 0, 0)


def test_ship_bytes_gives_the_same_vectors(tmp_path, corpus, local_rows, tiny_model, ray_head):
    home = tmp_path / "home"
    out = glimpse_cmd(
        "-v",
        "index",
        str(corpus),
        "--model",
        tiny_model,
        "--engine",
        "ray",
        "--ray-address",
        ray_head,
        "--ship-bytes",
        home=home,
    )
    assert "bytes shipped from this machine" in out.stderr
    assert_same(rows(home), local_rows)


def _start(home: Path, pics: Path, tiny_model: str, ray_head: str, hook: str, workers: int = 2) -> subprocess.Popen:
    env = dict(os.environ, GLIMPSE_HOME=str(home), HF_HUB_OFFLINE="1", **{TEST_HOOK_ENV: hook})
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "glimpse.cli",
            "-v",
            "index",
            str(pics),
            "--model",
            tiny_model,
            "--engine",
            "ray",
            "--ray-address",
            ray_head,
            "--batch-size",
            "2",
            "--workers",
            str(workers),
        ],
        env=env,
        cwd=str(Path(__file__).resolve().parent.parent),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_first_commit(proc: subprocess.Popen, home: Path) -> None:
    deadline = time.monotonic() + 120
    while indexed(home) == 0:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.2)


def _worker_pids() -> list[int]:
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in ps.splitlines() if "ray::" in line and "Embedder" in line]


def test_a_worker_killed_mid_run_is_retried_and_every_file_is_embedded_once(
    tmp_path, corpus, local_rows, tiny_model, ray_head
):
    home = tmp_path / "home"
    proc = _start(home, corpus, tiny_model, ray_head, "sleep:1.5")
    _wait_for_first_commit(proc, home)
    pids = _worker_pids()
    assert pids
    os.kill(pids[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert_same(rows(home), local_rows)
    outcome, new, _, embedded, failed, warnings = jobs(home)[-1]
    assert (outcome, new, embedded, failed) == ("ok", N, N, 0)  # each file committed once


def test_a_killed_driver_resumes_with_only_the_remaining_files(tmp_path, corpus, local_rows, tiny_model, ray_head):
    home = tmp_path / "home"
    # one worker: its batches end 2 s apart, so the driver is killed with some committed and some not
    proc = _start(home, corpus, tiny_model, ray_head, "sleep:2", workers=1)
    _wait_for_first_commit(proc, home)
    proc.kill()
    proc.communicate()
    done = indexed(home)
    assert 0 < done < N
    out = glimpse_cmd("-v", "reindex", "--engine", "ray", "--ray-address", ray_head, home=home)
    assert f"ray: {N - done} file(s) to embed" in out.stderr
    assert_same(rows(home), local_rows)
    assert jobs(home)[-1][:4] == ("ok", N - done, 0, N - done)


def test_a_file_that_kills_its_worker_every_time_is_recorded_failed(tmp_path, corpus, tiny_model, ray_head):
    home = tmp_path / "home"
    proc = _start(home, corpus, tiny_model, ray_head, "exit:img_0003.png")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    got = rows(home)
    bad = str(corpus / "img_0003.png")
    assert got[bad][0] == "failed" and "worker process died" in got[bad][5]
    assert all(v[0] == "indexed" for p, v in got.items() if p != bad)
    outcome, new, _, embedded, failed, warnings = jobs(home)[-1]
    assert (outcome, new, embedded, failed) == ("ok", N, N - 1, 1)
    assert "worker restart(s)" in warnings


def test_engine_ray_without_ray_exits_2_with_the_install_line(tmp_path, corpus, tiny_model):
    # A Ray that cannot be found: a sitecustomize hiding it from this one process.
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\nclass _H:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ray' or name.startswith('ray.'):\n            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, _H())\n"
    )
    out = glimpse_cmd(
        "index",
        str(corpus),
        "--model",
        tiny_model,
        "--engine",
        "ray",
        home=tmp_path / "home",
        check=False,
        env={"PYTHONPATH": str(hide)},
    )
    assert out.returncode == 2
    assert 'pip install -e ".[ray]"' in out.stderr
