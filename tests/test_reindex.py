"""Issue 4: `glimpse reindex`, the nightly job.

Incremental work only (new/changed embedded, moves reuse vectors, deletions
leave), unmounted roots kept, one job at a time (exit 3), every run recorded in
the jobs table and shown by `glimpse stats`, plain log lines off a terminal.
Most tests run the real CLI in a subprocess, as cron or systemd would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import draw_image, make_images

COUNT_RE = re.compile(r"(\d+) (files|new|changed|moved|deleted|failed|embedded)")


def counts(out: str) -> dict[str, int]:
    """Counts from the job's summary line on stdout."""
    line = next(line for line in out.splitlines() if re.match(r"(re)?index: ", line))
    return {name: int(n) for n, name in COUNT_RE.findall(line)}


def stats(glimpse) -> dict:
    return json.loads(glimpse("stats", "--json").stdout)


def db_rows(home: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(home / "glimpse.db")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def vectors_by_path(home: Path) -> dict[str, tuple[int, bytes]]:
    return {p: (i, v) for i, p, v in db_rows(home, "SELECT id, path, vector FROM images WHERE vector IS NOT NULL")}


def test_reindex_embeds_only_new_and_changed(glimpse, home, tmp_path, tiny_model):
    photos = tmp_path / "photos"
    files = make_images(photos, 6)
    first = counts(glimpse("index", str(photos), "--model", tiny_model).stdout)
    assert first["new"] == 6 and first["embedded"] == 6
    before = vectors_by_path(home)
    version_before = stats(glimpse)["index_version"]

    make_images(photos, 2, start=100)  # 2 new
    draw_image(999).save(files[0])  # 1 changed (new bytes)
    os.rename(files[1], photos / "renamed.png")  # 1 moved
    (photos / "sub").mkdir()
    os.rename(files[2], photos / "sub" / "moved.png")  # 1 moved into a subfolder
    files[3].unlink()  # 1 deleted
    shutil.copy(files[4], photos / "copy_of_4.png")  # a copy: new, but reuses the vector
    st = files[5].stat()
    os.utime(files[5], (st.st_atime, st.st_mtime + 100))  # touched only: not re-embedded

    proc = glimpse("reindex")
    c = counts(proc.stdout)
    assert (c["new"], c["changed"], c["moved"], c["deleted"], c["failed"]) == (3, 1, 2, 1, 0)
    assert c["embedded"] == 3  # 2 new + 1 changed; the moves, the copy and the touch reuse vectors
    after = vectors_by_path(home)
    assert after[str(photos / "renamed.png")] == before[str(files[1])]  # same row, same vector
    assert after[str(photos / "sub" / "moved.png")] == before[str(files[2])]
    assert after[str(files[5])] == before[str(files[5])]
    assert after[str(photos / "copy_of_4.png")][1] == before[str(files[4])][1]  # new row, reused vector
    assert after[str(files[0])][1] != before[str(files[0])][1]  # re-embedded
    assert str(files[3]) not in after

    s = stats(glimpse)
    on_disk = sorted(str(p) for p in photos.rglob("*.png"))
    assert s["images_indexed"] == len(on_disk) == 8
    assert sorted(after) == on_disk
    assert s["index_version"] != version_before
    job = s["jobs"][0]
    assert job["kind"] == "reindex" and job["outcome"] == "ok"
    assert (job["new"], job["changed"], job["moved"], job["deleted"], job["failed"], job["embedded"]) == (
        3,
        1,
        2,
        1,
        0,
        3,
    )
    assert job["index_version"] == s["index_version"]
    assert job["started_at"] and job["finished_at"] >= job["started_at"]

    # The published index holds exactly the files on disk: each new file finds itself first.
    hits = json.loads(glimpse("search", "--image", str(photos / "img_0100.png"), "-k", "3", "--json").stdout)
    assert hits[0]["path"] == str(photos / "img_0100.png")


def test_noop_reindex_keeps_the_live_version(glimpse, home, tmp_path, tiny_model):
    photos = tmp_path / "photos"
    make_images(photos, 3)
    glimpse("index", str(photos), "--model", tiny_model)
    v = stats(glimpse)["index_version"]
    c = counts(glimpse("reindex").stdout)
    assert c["embedded"] == 0 and c["new"] == 0 and c["deleted"] == 0
    s = stats(glimpse)
    assert s["index_version"] == v and s["jobs"][0]["index_version"] == v
    assert [j["outcome"] for j in s["jobs"]] == ["ok", "ok"]
    assert sorted(os.listdir(home / "index")) == ["000001", "current"]


@pytest.mark.parametrize("how", ["removed", "empty mount point"])
def test_unavailable_root_keeps_its_images(glimpse, home, tmp_path, tiny_model, how):
    drive, local = tmp_path / "drive", tmp_path / "local"
    make_images(drive, 3)
    make_images(local, 2, start=10)
    glimpse("index", str(drive), str(local), "--model", tiny_model)
    before = vectors_by_path(home)
    version = stats(glimpse)["index_version"]

    parked = tmp_path / "parked"
    os.rename(drive, parked)  # the drive is unplugged ...
    if how == "empty mount point":
        drive.mkdir()  # ... and its mount point stays behind, empty
    proc = glimpse("reindex")
    c = counts(proc.stdout)
    assert proc.returncode == 0
    assert c["deleted"] == 0 and c["embedded"] == 0
    assert f"{drive} is missing or unmounted" in proc.stderr
    assert vectors_by_path(home) == before
    s = stats(glimpse)
    assert s["images_indexed"] == 5 and s["index_version"] == version
    assert {r["path"]: r["available"] for r in s["roots"]} == {str(drive): False, str(local): True}
    assert str(drive) in (s["jobs"][0]["message"] or "")
    assert "(unavailable)" in glimpse("stats").stdout

    # Plugged back in: available again, and nothing is re-embedded.
    if drive.exists():
        drive.rmdir()
    os.rename(parked, drive)
    c = counts(glimpse("reindex").stdout)
    assert c["embedded"] == 0 and c["deleted"] == 0 and c["new"] == 0
    assert all(r["available"] for r in stats(glimpse)["roots"])
    assert vectors_by_path(home) == before


def test_emptied_root_with_real_deletions_still_deletes(glimpse, home, tmp_path, tiny_model):
    """Only a root that is missing or completely empty counts as unmounted; deleting some files deletes them."""
    photos = tmp_path / "photos"
    files = make_images(photos, 3)
    glimpse("index", str(photos), "--model", tiny_model)
    files[0].unlink()
    files[1].unlink()
    c = counts(glimpse("reindex").stdout)
    assert c["deleted"] == 2
    assert stats(glimpse)["images_indexed"] == 1


HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, str(os.getpid()).encode())
print("held", flush=True)
time.sleep(600)
"""


def test_second_job_exits_3_and_a_killed_holder_leaves_no_stale_lock(glimpse, home, tmp_path, tiny_model):
    photos = tmp_path / "photos"
    make_images(photos, 2)
    glimpse("index", str(photos), "--model", tiny_model)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(home / "glimpse.lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        for args in (("reindex",), ("index", str(photos))):
            proc = glimpse(*args, check=False)
            assert proc.returncode == 3, proc.stderr
            assert "another index job is running" in proc.stderr
            assert f"pid {holder.pid}" in proc.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The holder died with kill -9; its lock file is still there, but not its lock.
    assert (home / "glimpse.lock").exists()
    assert glimpse("reindex").returncode == 0
    # The job that could not start is not recorded as a run; the ones that ran are.
    assert [j["kind"] for j in stats(glimpse)["jobs"]] == ["reindex", "index"]


def test_reindex_without_roots_is_an_error(glimpse):
    proc = glimpse("reindex", check=False)
    assert proc.returncode == 1
    assert "no folders are known yet" in proc.stderr


def test_logs_are_plain_lines_off_a_terminal(glimpse, tmp_path, tiny_model):
    photos = tmp_path / "photos"
    make_images(photos, 4)
    proc = glimpse(
        "index", str(photos), "--model", tiny_model, "--batch-size", "2", env={"GLIMPSE_PROGRESS_EVERY": "0"}
    )
    assert "\r" not in proc.stderr and "\x1b[" not in proc.stderr  # no progress bars, no colours
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and all(
        re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (INFO|WARNING) \S+: ", line) for line in lines
    ), lines
    assert any("embedding: 4/4" in line for line in lines)
    assert any("published index version 000001" in line for line in lines)


def test_stats_text_shows_recent_jobs(glimpse, tmp_path, tiny_model):
    photos = tmp_path / "photos"
    make_images(photos, 2)
    glimpse("index", str(photos), "--model", tiny_model)
    make_images(photos, 1, start=5)
    glimpse("reindex")
    out = glimpse("stats").stdout
    assert "recent jobs:" in out
    jobs = [line for line in out.splitlines() if re.match(r"\s+#\d+ ", line)]
    assert re.search(r"#2 reindex .* ok: 1 new, 0 changed, 0 moved, 0 deleted, 0 failed -> 000002", jobs[0])
    assert re.search(r"#1 index .* ok: 2 new, .* -> 000001", jobs[1])


def test_previous_interrupted_job_forces_a_publish(home, tmp_path, tiny_model, tiny_encoder):
    """Batches committed by a job that died before publishing get published by the next run, even a no-op one."""
    from indexer.pipeline import Options, run_job
    from search.paths import Paths
    from search.vectors.live import IndexDir

    paths = Paths.resolve(home)
    photos = tmp_path / "photos"
    make_images(photos, 3)
    run_job(paths, [str(photos)], Options(model=tiny_model, workers=0), encoder=tiny_encoder)
    make_images(photos, 2, start=10)
    # Simulate a job killed after committing its batches but before publishing.
    index_dir = IndexDir(paths.index)
    live = index_dir.current_version()
    real_publish = IndexDir.publish_sources
    IndexDir.publish_sources = lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt("killed"))
    try:
        with pytest.raises(KeyboardInterrupt):
            run_job(paths, None, Options(kind="reindex", workers=0), encoder=tiny_encoder)
    finally:
        IndexDir.publish_sources = real_publish
    assert index_dir.current_version() == live
    counts_, version = run_job(paths, None, Options(kind="reindex", workers=0), encoder=tiny_encoder)
    assert counts_.embedded == 0 and version != live
    assert index_dir.load().images.ntotal == 5
    outcomes = [o for (o,) in db_rows(home, "SELECT outcome FROM jobs ORDER BY id")]
    assert outcomes == ["ok", "interrupted", "ok"]
