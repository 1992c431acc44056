"""A job's counts say what it committed, however it ends.

`glimpse reindex` is stopped after some batches are committed: by Ctrl-C
(SIGINT), by `systemctl stop` (SIGTERM) and by the OOM killer (SIGKILL). Each
time the job row counts exactly the rows and vectors the database gained, and
`glimpse stats` shows that the live index (never published by those runs) is
behind the database.

Each stop is synchronised with the job, not timed: the test takes the database's write lock
once the job has committed some batches and is still running (``hold_the_job``). A job cannot
end without writing again (its next batch, at least its job row), so it is still running when
the signal is sent, however busy the machine; the lock is let go right after the signal.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, make_images

N_NEW = 1200  # a run with --batch-size 2 embeds ~100 images/s here: plenty left at every stop


def db_counts(db: Path) -> tuple[int, int] | None:
    """(rows, rows with a vector), or None while the database is busy."""
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            return con.execute("SELECT count(*), count(vector) FROM images").fetchone()
        finally:
            con.close()
    except sqlite3.OperationalError:
        return None


def hold_the_job(db: Path, proc: subprocess.Popen, after_job: int, vectors: int) -> sqlite3.Connection:
    """An open write transaction, taken once job > ``after_job`` is running and the database holds at
    least ``vectors`` vectors. Until it ends, the job's writes wait (busy timeout) and it cannot finish."""
    con = sqlite3.connect(db, timeout=30, isolation_level=None)
    while True:
        assert proc.poll() is None, "the run ended before it committed a few batches"
        con.execute("BEGIN IMMEDIATE")  # waits for a commit in progress
        (stored,) = con.execute("SELECT count(vector) FROM images").fetchone()
        job = con.execute("SELECT id, outcome FROM jobs ORDER BY id DESC LIMIT 1").fetchone()
        if stored >= vectors and job[0] > after_job and job[1] == "running":
            return con
        con.execute("ROLLBACK")
        time.sleep(0.01)


def last_job(db: Path) -> dict:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return dict(con.execute("SELECT * FROM jobs ORDER BY id DESC LIMIT 1").fetchone())
    finally:
        con.close()


def test_stopped_jobs_count_what_they_committed(home, tmp_path, glimpse, tiny_model):
    photos = tmp_path / "photos"
    make_images(photos / "old", 10, size=(40, 40))
    glimpse("index", str(photos), "--model", tiny_model)
    make_images(photos / "new", N_NEW, start=1000, size=(40, 40))
    db = home / "glimpse.db"
    env = dict(os.environ, GLIMPSE_HOME=str(home), HF_HUB_OFFLINE="1", GLIMPSE_PROGRESS_EVERY="0")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        rows0, vectors0 = db_counts(db)
        job0 = last_job(db)["id"]
        with open(tmp_path / f"{sig.name}.log", "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "glimpse.cli", "reindex", "--batch-size", "2"],
                cwd=str(REPO),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            held = hold_the_job(db, proc, job0, vectors0 + 20)
            try:
                proc.send_signal(sig)
            finally:
                held.rollback()
                held.close()
            rc = proc.wait(timeout=60)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # decode workers a kill -9 left behind
            except ProcessLookupError:
                pass
        rows, vectors = db_counts(db)
        job = last_job(db)
        assert rc == (-9 if sig == signal.SIGKILL else 130), (tmp_path / f"{sig.name}.log").read_text()
        assert job["outcome"] == ("running" if sig == signal.SIGKILL else "interrupted")
        assert vectors > vectors0
        assert (job["new"], job["embedded"], job["failed"]) == (rows - rows0, vectors - vectors0, 0), sig.name

    stats = json.loads(glimpse("stats", "--json").stdout)
    assert stats["images_in_live_index"] == 10 and stats["images_indexed"] == vectors
    text = glimpse("stats").stdout
    assert f"images indexed: {vectors}" in text and "in live index:  10" in text
    assert "the live index is behind the database: the last run did not publish" in text
