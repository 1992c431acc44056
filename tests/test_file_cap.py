"""The indexer checks a file's size and header before it reads or hashes the whole file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO, draw_image, make_images

# What a JPEG starts with (SOI, then a JFIF APP0 segment); nothing after it.
JPEG_HEADER = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"

# The CLI, reporting on exit how many bytes its process read (/proc/self/io rchar).
_COUNTING_CLI = """
import atexit, runpy, sys
def report():
    with open('/proc/self/io') as f:
        sys.stderr.write('\\nrchar=' + dict(line.split(': ') for line in f.read().splitlines())['rchar'] + '\\n')
atexit.register(report)
runpy.run_module('glimpse.cli', run_name='__main__')
"""


def _glimpse_counting(home, *args, env=None) -> tuple[subprocess.CompletedProcess, int]:
    e = dict(os.environ, GLIMPSE_HOME=str(home), **(env or {}))
    proc = subprocess.run(
        [sys.executable, "-c", _COUNTING_CLI, *args], capture_output=True, text=True, env=e, cwd=str(REPO), timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, int(re.search(r"rchar=(\d+)", proc.stderr).group(1))


def _sparse(path, head: bytes, size: int) -> None:
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)  # a hole: no disk used, and reading it costs only time


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="counts reads through Linux's /proc/self/io")
def test_big_and_fake_files_fail_before_they_are_read(tmp_path, home, glimpse, tiny_model):
    pics = tmp_path / "pics"
    make_images(pics, 4)
    # A valid PNG padded past the cap: decoders ignore bytes after IEND, so only the cap refuses it.
    padded = pics / "padded.png"
    draw_image(9).save(padded)
    with open(padded, "r+b") as f:
        f.truncate(9 << 20)
    # 4 GB that start like a JPEG. Before the cap it was read and hashed whole, then Pillow
    # skipped the zeros one byte at a time (many minutes).
    _sparse(pics / "huge.jpg", JPEG_HEADER, 4 << 30)
    (pics / "notes.png").write_text("not an image at all\n" * 100)
    cap = {"GLIMPSE_MAX_FILE_MB": "8"}

    out, read = _glimpse_counting(home, "index", str(pics), "--model", tiny_model, "--workers", "0", env=cap)
    assert "4 embedded" in out.stdout and "3 failed" in out.stdout, out.stdout + out.stderr
    assert read < 1 << 30  # decoding in-process (--workers 0): nothing read the 4 GB file, nor hashed it

    stats = json.loads(glimpse("stats", "--json").stdout)
    assert stats["images_indexed"] == 4 and stats["images_failed"] == 3
    failed = {f["path"]: f["error"] for f in stats["failed"]}
    assert set(failed) == {str(pics / n) for n in ("padded.png", "huge.jpg", "notes.png")}
    assert (
        failed[str(pics / "padded.png")]
        == "file is 9 MB, over the 8 MB limit for indexing (GLIMPSE_MAX_FILE_MB); not read"
    )
    assert (
        failed[str(pics / "huge.jpg")]
        == "file is 4,096 MB, over the 8 MB limit for indexing (GLIMPSE_MAX_FILE_MB); not read"
    )
    assert failed[str(pics / "notes.png")].startswith("not an image: the first bytes are not those of")

    # Touched (same size, new mtime), the refused files would be hashed up front to tell a touch
    # from an edit; they are not read, and are refused again. The others stay as they are.
    for name in ("padded.png", "huge.jpg"):
        os.utime(pics / name, (1_000_000, 1_000_000))
    again, read = _glimpse_counting(home, "reindex", env=cap)
    assert "2 changed" in again.stdout and "2 failed" in again.stdout and "0 embedded" in again.stdout, again.stdout
    assert read < 1 << 30


def test_header_read_stops_at_its_limit(tmp_path):
    """A JPEG header over megabytes of zeros: Pillow would skip them one byte at a time (4 GB: many
    minutes); the header read gives up at its limit (16 MiB by default, 1 MiB here to keep the test quick)."""
    from search.media.decode import ImageDecodeError, probe_file

    junk = tmp_path / "junk.jpg"
    _sparse(junk, JPEG_HEADER, 3 << 20)
    with pytest.raises(ImageDecodeError, match="no image header in the first 1 MiB; not read further"):
        probe_file(str(junk), read_limit=1 << 20)
    real = tmp_path / "real.jpg"
    draw_image(3, (64, 48)).save(real, quality=90)
    info = probe_file(str(real), read_limit=1 << 20)
    assert (info["format"], info["width"], info["height"]) == ("JPEG", 64, 48)
