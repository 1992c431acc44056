"""Issue 4: kill -9 at any moment loses nothing.

Two tests, 40+ kill points between them:

* the real `glimpse reindex` CLI, killed again and again at random moments
  (random delays from start, after random amounts of embedding progress, and
  around the final publish); after every kill the database passes
  ``PRAGMA integrity_check``, the live index loads and names only real rows,
  every vector committed so far is still there, unchanged, and the lock is free;
  the last run embeds exactly what was left and publishes everything;
* a loop of index publishes killed at random moments: ``current`` always
  names a complete, loadable version, and leftovers are cleaned up.
"""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from tests.conftest import REPO, draw_image, make_images

# Enough new files that later kill points still find work: without torch to import, a run with the
# tiny model starts in about a second and embeds ~100 images/s on 2 cores.
N_OLD, N_NEW = 20, 1200


def integrity(db: Path) -> str:
    con = sqlite3.connect(db)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def vectors(db: Path) -> dict[int, tuple[str, bytes]]:
    con = sqlite3.connect(db)
    try:
        return {i: (p, v) for i, p, v in con.execute("SELECT id, path, vector FROM images WHERE vector IS NOT NULL")}
    finally:
        con.close()


def embedded_count(db: Path) -> int:
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM images WHERE vector IS NOT NULL").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:  # busy for a moment: no progress to report
        return -1


def live_ids(index_root: Path) -> tuple[str, set[int]]:
    """Load the live index the way a server does; return its version and ids."""
    import faiss

    from search.vectors.live import IndexDir

    loaded = IndexDir(index_root).load(use_gpu=False)
    assert loaded is not None
    assert loaded.images.ntotal == loaded.manifest["images"]
    ids = faiss.vector_to_array(faiss.downcast_index(loaded.images).id_map)
    return loaded.version, {int(i) for i in ids}


def start_reindex(home: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, GLIMPSE_HOME=str(home), HF_HUB_OFFLINE="1", GLIMPSE_PROGRESS_EVERY="0")
    with open(log, "w") as f:  # a file, not a pipe: a full pipe would stall the job
        return subprocess.Popen(
            [sys.executable, "-m", "glimpse.cli", "reindex", "--batch-size", "2"],
            cwd=str(REPO),
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill(proc: subprocess.Popen) -> None:
    """kill -9 the job itself, as the OOM killer would; its decode workers are left to notice."""
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text().splitlines() if line[:2] == "20"]
    return lines[-1][24:120] if lines else "(starting up)"


def reap_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_reindex_killed_at_random_points_loses_nothing(home, tmp_path, tiny_model, tiny_encoder):
    from indexer.lock import JobLock
    from indexer.pipeline import Options, run_job
    from search.paths import Paths

    rng = random.Random(4)
    photos = tmp_path / "photos"
    old = make_images(photos / "old", N_OLD, size=(40, 40))
    run_job(Paths.resolve(home), [str(photos)], Options(model=tiny_model, workers=0), encoder=tiny_encoder)
    db, index_root = home / "glimpse.db", home / "index"

    # Tonight's work: N_NEW new files, one changed, one moved, one deleted.
    make_images(photos / "new", N_NEW, start=1000, size=(40, 40))
    draw_image(5000, (40, 40)).save(old[0])
    os.rename(old[1], photos / "moved.png")
    old[2].unlink()
    deleted_id = next(i for i, (p, _) in vectors(db).items() if p == str(old[2]))
    n_files = N_OLD + N_NEW - 1

    committed = vectors(db)  # id -> (path, vector): must never be lost or altered once committed
    changed_id = next(i for i, (p, _) in committed.items() if p == str(old[0]))
    moved_id = next(i for i, (p, _) in committed.items() if p == str(old[1]))
    kills, landed = 0, []
    plan = ["time"] * 4 + ["progress"] * 18 + ["near end"] * 5
    for run, mode in enumerate(plan):
        log = tmp_path / f"run{run:02d}.log"
        proc = start_reindex(home, log)
        try:
            if mode == "time":
                time.sleep(rng.uniform(0.3, 1.5))
            elif mode == "progress":
                target = embedded_count(db) + rng.randint(3, 14)
                while proc.poll() is None and embedded_count(db) < target:
                    time.sleep(0.01)
            else:  # all embedded and scanned: land in caption sync, the (forced) publish, the job's last write
                while proc.poll() is None and (embedded_count(db) < n_files or "scanned" not in log.read_text()):
                    time.sleep(0.001)
                time.sleep(rng.uniform(0.0, 0.03))  # what is left takes tens of milliseconds
            if proc.poll() is not None:
                assert proc.wait() == 0, log.read_text()
                landed.append(f"{mode}: finished before the kill")
                continue  # it finished before the kill: not a kill point
            kill(proc)
            kills += 1
            landed.append(f"{mode}: {_last_line(log)}")
            # The lock died with the job, even while its decode workers linger.
            assert not JobLock.is_held(home / "glimpse.lock")
        finally:
            reap_group(proc)

        assert integrity(db) == "ok"
        version, ids = live_ids(index_root)
        now = vectors(db)
        assert ids <= set(now) | {deleted_id}, "the live index names rows that never existed"
        for row_id, (path, vec) in committed.items():
            if row_id == deleted_id or (row_id == changed_id and now.get(row_id, (None, None))[1] != vec):
                continue  # deleted on purpose / re-embedded on purpose
            assert row_id in now, f"committed vector of {path} was lost"
            assert now[row_id][1] == vec, f"committed vector of {path} changed"
        committed.update(now)
        committed = {i: v for i, v in committed.items() if i in now or i == deleted_id}
    print("kill points:\n" + "\n".join(landed))
    assert kills >= 20, f"only {kills} runs were killed before they finished"

    # What a resume still has to embed: files on disk without a current vector (the move reuses one).
    con = sqlite3.connect(db)
    rows = {p: (s, m, v is not None) for p, s, m, v in con.execute("SELECT path, size, mtime, vector FROM images")}
    con.close()
    todo = 0
    for f in photos.rglob("*.png"):
        st, row = f.stat(), rows.get(str(f))
        if not (row and row[2] and row[0] == st.st_size and abs(row[1] - st.st_mtime) < 1e-6):
            todo += 1
    if str(photos / "moved.png") not in rows:
        todo -= 1

    env = dict(os.environ, GLIMPSE_HOME=str(home), HF_HUB_OFFLINE="1")
    final = subprocess.run(
        [sys.executable, "-m", "glimpse.cli", "reindex", "--batch-size", "2"],
        cwd=str(REPO),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert final.returncode == 0, final.stderr
    embedded = int(re.search(r"(\d+) embedded", final.stdout).group(1))
    assert embedded == todo

    assert integrity(db) == "ok"
    now = vectors(db)
    assert len(now) == n_files
    assert sorted(p for p, _ in now.values()) == sorted(str(f) for f in photos.rglob("*.png"))
    assert now[moved_id][0] == str(photos / "moved.png")  # the move kept its row and vector
    assert now[moved_id][1] == committed[moved_id][1]
    version, ids = live_ids(index_root)
    assert ids == set(now)
    con = sqlite3.connect(db)
    outcomes = [o for (o,) in con.execute("SELECT outcome FROM jobs ORDER BY id")]
    con.close()
    assert outcomes[0] == "ok" and outcomes[-1] == "ok" and "running" not in outcomes
    assert outcomes.count("interrupted") <= kills
    assert (index_root / "current").read_text().strip() == version
    assert len([p for p in index_root.iterdir() if p.name.isdigit()]) <= 2
    assert not [p for p in index_root.iterdir() if p.name.startswith(".")]


PUBLISH_LOOP = textwrap.dedent("""
    import sys, numpy as np
    from search.vectors.live import IndexDir
    from tests.index_support import publish_arrays
    vecs = np.load(sys.argv[2])
    ids = np.arange(len(vecs), dtype=np.int64)
    d, i = IndexDir(sys.argv[1]), 0
    while True:
        i += 1
        n = len(vecs) - (i % 7) * 1000
        meta = {"dim": vecs.shape[1], "fingerprint": "f", "round": i}
        publish_arrays(d, vecs[:n], ids[:n], vecs[:10], ids[:10], meta)
        print(i, flush=True)
""")


def test_publish_killed_at_random_points_keeps_a_loadable_index(tmp_path):
    from search.vectors.live import IndexDir
    from tests.index_support import publish_arrays

    rng = np.random.default_rng(7)
    vecs = rng.normal(size=(60_000, 64)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    np.save(tmp_path / "vecs.npy", vecs)
    root = tmp_path / "index"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    delays = random.Random(7)
    seen_versions = set()
    for _ in range(20):
        proc = subprocess.Popen(
            [sys.executable, "-c", PUBLISH_LOOP, str(root), str(tmp_path / "vecs.npy")],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline()  # at least one publish done: there is something to keep safe
        time.sleep(delays.uniform(0.0, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()

        d = IndexDir(root)
        loaded = d.load(use_gpu=False)
        assert loaded is not None
        n = loaded.manifest["images"]
        assert loaded.images.ntotal == n and loaded.captions.ntotal == 10
        assert n == len(vecs) - (loaded.manifest["round"] % 7) * 1000
        # Nearest neighbour of a stored vector is itself: the file is whole, not just present.
        _, got = loaded.images.search(vecs[n - 1 : n], 1)
        assert got[0, 0] == n - 1
        numbered = [p for p in root.iterdir() if p.name.isdigit()]
        assert len(numbered) <= 3  # the last two, plus at most one renamed in but not yet live
        assert len([p for p in root.iterdir() if p.name.startswith(".tmp-")]) <= 1
        seen_versions.add(loaded.version)
    assert len(seen_versions) > 5  # the kills landed in many different publishes

    # The next successful publish cleans up whatever the kills left behind.
    publish_arrays(IndexDir(root), vecs[:100], np.arange(100), vecs[:1], np.arange(1), {"dim": 64, "fingerprint": "f"})
    assert len([p for p in root.iterdir() if p.name.isdigit()]) == 2
    assert not [p for p in root.iterdir() if p.name.startswith(".")]
