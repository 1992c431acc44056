"""A full disk never ends in a traceback, and never costs the live index.

GLIMPSE_HOME is a small tmpfs (root only: skipped elsewhere). The disk is filled
once right before a run (the database cannot grow), once leaving room for the
database writes but not for the new index files (the publish fails). Each time:
exit 1, one line on stderr naming the step, no traceback, nothing half-written
under index/, and once space is freed the earlier index still answers and
`glimpse stats` tells the database and the live index apart. Thumbnails whose
cache cannot be written (full, read-only) are served from memory, never a 500.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from conftest import make_images
from web_support import corpus, engine, image_id, server  # noqa: F401  (shared module-scoped fixtures)


def _mount_tmpfs(folder: Path, size: str, *options: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    folder.mkdir(parents=True, exist_ok=True)
    opts = ",".join((f"size={size}", *options))
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")


def _unmount(folder: Path) -> None:
    if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture
def small_home(home):
    _mount_tmpfs(home, "16M")
    yield home
    _unmount(home)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the file system holding ``folder`` until ``leave`` bytes are free."""
    filler = folder / "filler"
    st = os.statvfs(folder)
    room = st.f_bavail * st.f_frsize - leave
    with open(filler, "wb") as f:
        try:
            while room > 0:
                f.write(b"\0" * min(room, 1 << 20))
                room -= 1 << 20
            f.flush()
        except OSError:  # full already: exactly what was wanted
            pass
    return filler


def assert_one_clear_line(proc: subprocess.CompletedProcess, step: str) -> None:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no space left on ") and f"while {step}" in last, proc.stderr
    assert "the live index is unchanged" in last


def index_leftovers(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "index").iterdir() if p.name not in ("current", "000001"))


def test_disk_full_while_writing_the_database_and_while_publishing(small_home, tmp_path, glimpse, tiny_model):
    home = small_home
    pics = make_images(tmp_path / "pics", 50, size=(40, 40))
    manifest = tmp_path / "captions.jsonl"
    # 3,000 caption vectors: the index files outweigh what the database writes for a few new images.
    manifest.write_text(
        "".join(
            json.dumps({"path": str(p), "captions": [f"caption {i} of {p.name}" for i in range(60)]}) + "\n"
            for p in pics
        )
    )
    glimpse("index", str(tmp_path / "pics"), "--captions", str(manifest), "--model", tiny_model)
    assert (home / "index" / "current").read_text().strip() == "000001"

    # 1. Full before the run starts: the first database write fails.
    make_images(tmp_path / "pics" / "new", 40, start=500, size=(40, 40))
    filler = fill(home)
    assert_one_clear_line(glimpse("index", str(tmp_path / "pics"), check=False), "writing the database")
    assert index_leftovers(home) == []

    # 2. Room for the database writes (rows, FTS, indexes), not for the new index version: the publish fails.
    filler.unlink()
    filler = fill(home, leave=450 * 1024)
    assert_one_clear_line(glimpse("reindex", check=False), "publishing the index")
    assert index_leftovers(home) == []
    assert (home / "index" / "current").read_text().strip() == "000001"

    # 3. Space freed: the earlier index answers, the failed job is on record, stats tells the counts apart.
    filler.unlink()
    hits = json.loads(glimpse("search", "--image", str(pics[7]), "-k", "1", "--json").stdout)
    assert hits[0]["path"] == str(pics[7])
    stats = json.loads(glimpse("stats", "--json").stdout)
    assert stats["index_version"] == "000001" and stats["images_in_live_index"] == 50
    assert stats["images_indexed"] == 90  # the 40 new ones were committed before the publish failed
    job = stats["jobs"][0]
    assert job["outcome"] == "failed" and "no space left" in job["message"] and job["embedded"] == 40
    text = glimpse("stats").stdout
    assert "in live index:  50" in text and "the live index is behind the database" in text

    # 4. The next run publishes what the failed one committed.
    glimpse("reindex")
    stats = json.loads(glimpse("stats", "--json").stdout)
    assert stats["images_in_live_index"] == stats["images_indexed"] == 90


@pytest.mark.parametrize("how", ["full", "read-only"])
def test_thumbnails_without_a_writable_cache_are_served_uncached(server, engine, corpus, how):
    thumbs = engine.paths.thumbs
    _mount_tmpfs(thumbs, "1M", *(["ro"] if how == "read-only" else []))
    try:
        if how == "full":
            fill(thumbs)
        iid = image_id(engine, corpus.files["beach_03.png"])
        for size in (160, 320):
            url = f"{server.url}/api/images/{iid}/thumb?size={size}"
            try:
                with urllib.request.urlopen(url, timeout=30) as resp:
                    status, headers, body = resp.status, resp.headers, resp.read()
            except urllib.error.HTTPError as exc:
                status, headers, body = exc.code, exc.headers, exc.read()
            assert status in (200, 503), body
            if status == 503:
                assert headers["Retry-After"]
                continue
            assert headers["Content-Type"] == "image/jpeg" and headers["ETag"]
            img = Image.open(io.BytesIO(body))
            assert img.format == "JPEG" and max(img.size) <= size
        assert not list(thumbs.rglob("*.jpg"))  # nothing was (half-)written to the cache
    finally:
        _unmount(thumbs)
