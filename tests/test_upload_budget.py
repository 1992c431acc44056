"""Hostile uploads against a real `glimpse serve` (its own process, so its peak memory is its own).

A 13,000 x 13,000 RGBA PNG is under 700 KB on the wire and 676 MB decoded; a
server that decoded eight of them at once (one per waitress thread) needed
over 20 GB. Uploads over GLIMPSE_MAX_UPLOAD_PIXELS are refused from their
header (413); the rest are decoded under the GLIMPSE_DECODE_BUDGET_MB budget.

These tests hold the server to its answers (every status and message, and that it survives under a 6 GB
data limit); how much memory it takes doing so is a figure, measured by bench/upload_memory.py
(BENCHMARKS.md), not asserted here.
"""

from __future__ import annotations

import base64
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest

from bench.big_png import header_only_png, write_png
from conftest import OUTPUT, REPO
from web_support import corpus  # noqa: F401  (the shared indexed corpus)

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from Linux's /proc")

# A server that decodes what it should refuse must fail this test, not take the machine with it.
SERVER_DATA_LIMIT = 6 << 30


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (SERVER_DATA_LIMIT, SERVER_DATA_LIMIT))


@contextmanager
def serving(home, **settings: str):
    """`glimpse serve --port 0` in a subprocess; yields (base URL, pid)."""
    env = dict(os.environ, GLIMPSE_HOME=str(home), PYTHONUNBUFFERED="1", **settings)
    env.pop("GLIMPSE_ALLOWED_HOSTS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "glimpse.cli", "serve", "--port", "0", "--threads", "8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=str(REPO),
        preexec_fn=_limit_memory,
    )
    lines: list[str] = []
    try:
        url, deadline = None, time.time() + 120
        while url is None and time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"Glimpse is serving on (http://127\.0\.0\.1:\d+)/", line)
            url = m.group(1) if m else None
        assert url, "".join(lines)
        # Keep reading its output, so a chatty server never blocks on a full pipe.
        threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _post(url: str, body: bytes, content_type: str) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def upload(base: str, route: str, data: bytes) -> tuple[int, dict]:
    """The image by every way a client can send one: the API, the page's fragment, clip-retrieval."""
    if route == "knn":
        body = json.dumps({"image": base64.b64encode(data).decode(), "indice_name": "glimpse", "num_images": 3})
        return _post(f"{base}/knn-service", body.encode(), "application/json")
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="up.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    path = "/api/search/image?k=3" if route == "api" else "/fragments/image"
    return _post(base + path, body, f"multipart/form-data; boundary={boundary}")


def concurrently(base: str, data: bytes, routes: list[str]) -> list[tuple[int, dict]]:
    with ThreadPoolExecutor(len(routes)) as pool:
        return list(pool.map(lambda r: upload(base, r, data), routes))


def health(base: str) -> str:
    with urllib.request.urlopen(f"{base}/api/health", timeout=30) as resp:
        return json.load(resp)["status"]


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """13,000 x 13,000 RGBA: 169 MP, under GLIMPSE_MAX_IMAGE_PIXELS (179 MP); cached in test-output/."""
    return write_png(OUTPUT / "upload-13000x13000-rgba.png", 13000, 13000).read_bytes()


def test_eight_huge_uploads_are_refused_from_their_header(corpus, bomb):
    assert len(bomb) < 1 << 20
    with serving(corpus.home) as (base, _):
        answers = concurrently(base, bomb, ["api"] * 4 + ["page"] * 2 + ["knn"] * 2)
        assert health(base) == "ok"
    for status, body in answers:
        assert status == 413, body
        assert body["error"] == (
            "image too large: 13000x13000 = 169,000,000 pixels; the limit for uploads is "
            "50,000,000 pixels (GLIMPSE_MAX_UPLOAD_PIXELS)"
        )


def test_uploads_under_the_limit_are_decoded_one_at_a_time_and_answered(corpus, tmp_path):
    """Lower limits, so that the budget (40 MB) admits one 36 MB decode at a time: all four are answered."""
    under = write_png(tmp_path / "under.png", 3000, 2999).read_bytes()  # 8,997,000 px: 36 MB decoded
    over = write_png(tmp_path / "over.png", 3000, 3001).read_bytes()
    with serving(corpus.home, GLIMPSE_MAX_UPLOAD_PIXELS="9000000", GLIMPSE_DECODE_BUDGET_MB="40") as (base, _):
        answers = concurrently(base, under, ["api", "api", "page", "knn"])
        refused = upload(base, "api", over)
        assert health(base) == "ok"
    assert [status for status, _ in answers] == [200] * 4, answers
    assert len(answers[0][1]["results"]) == 3 and answers[2][1]["count"] and len(answers[3][1]) == 3
    assert (
        refused[0] == 413
        and "the limit for uploads is 9,000,000 pixels (GLIMPSE_MAX_UPLOAD_PIXELS)" in refused[1]["error"]
    )


def test_failed_decodes_are_answered_and_the_server_stays_up(corpus):
    """A 68-byte PNG claiming 7,000 x 7,000 (under the upload pixel limit) makes Pillow allocate 196 MB before
    the first row fails. The budget (400 MB) lets two decode at a time, so every one of the 8 threads gets its
    turn. What the server keeps afterwards (each thread once kept ~200 MB) is measured by
    ``bench/upload_memory.py --only-failed``."""
    fake = header_only_png(7000, 7000)
    assert len(fake) == 68
    with serving(corpus.home, GLIMPSE_DECODE_BUDGET_MB="400") as (base, _):
        answers = concurrently(base, fake, ["api"] * 8 + ["page"] * 4 + ["knn"] * 4)
        assert health(base) == "ok"
    for status, body in answers:
        assert status == 400 and "cannot use this image" in body["error"], (status, body)


def test_decode_budget_admits_what_fits_and_runs_an_oversized_decode_alone():
    """The weighted semaphore itself: what is held never exceeds the budget, first come first served,
    and a decode larger than the whole budget waits until it runs alone."""
    from search.media.decode import DecodeBudget

    budget, lock = DecodeBudget(100), threading.Lock()
    holding: dict[int, int] = {}
    seen: list[dict[int, int]] = []

    def decode(i: int, nbytes: int) -> None:
        with budget.hold(nbytes):
            with lock:
                holding[i] = nbytes
                seen.append(dict(holding))
            time.sleep(0.005)
            with lock:
                del holding[i]

    sizes = [40] * 6 + [250] + [40] * 6
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(decode, range(len(sizes)), sizes))
    assert len(seen) == len(sizes)
    assert all(sum(min(n, 100) for n in held.values()) <= 100 for held in seen)
    assert max(len(held) for held in seen) <= 2  # two 40s fit at once, never three
    assert [held for held in seen if 250 in held.values()] == [{6: 250}]  # alone
