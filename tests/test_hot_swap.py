"""Issue 4: a running server swaps to a newly published index without a restart.

Several threads query continuously (through a real waitress server and the
JSON API, and straight against the Engine) while two `glimpse reindex` runs
publish new versions, the second one pruning the version the server started
with. Zero failed requests; afterwards every answer includes the new images.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, make_images

THREADS = 4


def reindex(home: Path) -> None:
    env = dict(os.environ, GLIMPSE_HOME=str(home), HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "glimpse.cli", "reindex"],
        cwd=str(REPO),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr


def ids_by_folder(home: Path, folder: Path) -> set[int]:
    con = sqlite3.connect(home / "glimpse.db")
    try:
        return {i for i, p in con.execute("SELECT id, path FROM images") if p.startswith(str(folder) + os.sep)}
    finally:
        con.close()


class Queries:
    """Threads that query until stopped, recording every error and the ids each answer held."""

    def __init__(self, ask):
        self.ask = ask
        self.errors: list[str] = []
        self.answers: list[tuple[float, float, frozenset[int]]] = []  # (asked, answered, ids)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(THREADS)]

    def _run(self, n: int) -> None:
        words = ["a photo", "red", "beach at dusk", "a dog", "city lights"]
        i = 0
        while not self._stop.is_set():
            i += 1
            try:
                asked = time.monotonic()
                ids = frozenset(self.ask(words[(n + i) % len(words)]))
                with self._lock:
                    self.answers.append((asked, time.monotonic(), ids))
            except Exception as exc:  # noqa: BLE001 - every failure counts
                with self._lock:
                    self.errors.append(f"{exc.__class__.__name__}: {exc}")

    def __enter__(self) -> Queries:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def wait_for(self, wanted: set[int], timeout: float = 30.0) -> float:
        """Time when an answer first included all of ``wanted``."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            with self._lock:
                for _, answered, ids in self.answers:
                    if answered >= start and wanted <= ids:
                        return answered
            time.sleep(0.05)
        raise AssertionError("no answer included the new images")

    def asked_after(self, t: float) -> list[frozenset[int]]:
        with self._lock:
            return [ids for asked, _, ids in self.answers if asked > t]


def _through_http(engine):
    app_mod = pytest.importorskip("web.app")
    server_mod = pytest.importorskip("web.server")
    app = app_mod.create_app(engine)
    server = server_mod.make_server(app, "127.0.0.1", 0, threads=THREADS * 2)
    threading.Thread(target=server.run, daemon=True).start()
    base = server_mod.server_url(server)

    def ask(q: str) -> list[int]:
        url = base + "api/search?" + urllib.parse.urlencode({"q": q, "k": 100})
        with urllib.request.urlopen(url, timeout=30) as resp:
            assert resp.status == 200
            return [r["id"] for r in json.load(resp)["results"]]

    def stats() -> dict:
        with urllib.request.urlopen(base + "api/stats", timeout=30) as resp:
            return json.load(resp)

    return ask, stats, server.close


def _through_engine(engine):
    from search.query.kinds import Paging, TextQuery

    def ask(q: str) -> list[int]:
        return [r.id for r in engine.search(TextQuery(q), page=Paging(k=100)).results]

    return ask, engine.stats, lambda: None


@pytest.mark.parametrize("via", ["http", "engine"])
def test_queries_never_fail_while_reindex_publishes(home, tmp_path, tiny_model, tiny_encoder, via):
    from indexer.pipeline import Options, run_job
    from search.engine import Engine
    from search.paths import Paths

    paths = Paths.resolve(home)
    photos = tmp_path / "photos"
    make_images(photos / "a", 10, size=(40, 40))
    run_job(paths, [str(photos)], Options(model=tiny_model, workers=0), encoder=tiny_encoder)
    engine = Engine(paths, encoder=tiny_encoder, index_check_every=0.05)
    ask, stats, close = (_through_http if via == "http" else _through_engine)(engine)
    try:
        assert len(ask("warm up")) == 10
        with Queries(ask) as queries:
            for round_, folder in enumerate(("b", "c"), start=2):
                make_images(photos / folder, 6, start=100 * round_, size=(40, 40))
                reindex(home)  # publishes version 2, then 3 (pruning version 1, the one served at first)
                new = ids_by_folder(home, photos / folder)
                assert len(new) == 6
                swapped = queries.wait_for(new)
                assert engine.index.get().version == f"{round_:06d}"
            time.sleep(0.3)
        assert not queries.errors, queries.errors[:5]
        assert len(queries.answers) >= 20
        everything = ids_by_folder(home, photos)
        later = queries.asked_after(swapped)
        assert later and all(ids == everything for ids in later)
        assert sorted(p.name for p in (home / "index").iterdir() if p.name.isdigit()) == ["000002", "000003"]
        # Every run is in the jobs table, and the server reports it (GET /api/stats).
        s = stats()
        assert s["images_indexed"] == 22 and s["index_version"] == "000003"
        assert [(j["kind"], j["outcome"], j["new"], j["embedded"], j["index_version"]) for j in s["jobs"]] == [
            ("reindex", "ok", 6, 6, "000003"),
            ("reindex", "ok", 6, 6, "000002"),
            ("index", "ok", 10, 10, "000001"),
        ]
        assert all(j["started_at"] <= j["finished_at"] for j in s["jobs"])
    finally:
        close()
        engine.close()


def test_a_load_racing_a_prune_retries_at_once(tmp_path):
    """`current` read, then the version folder vanishes before it is loaded: the next version is tried at once."""
    import numpy as np

    from search.vectors.live import IndexDir, LiveIndex
    from tests.index_support import publish_arrays

    vecs = np.eye(4, dtype=np.float32)
    d = IndexDir(tmp_path / "index")
    meta = {"dim": 4, "fingerprint": "f"}
    publish_arrays(d, vecs[:2], np.arange(2), vecs[:1], np.arange(1), meta)
    live = LiveIndex(d, check_every=0.0)
    assert live.get().version == "000001"
    publish_arrays(d, vecs[:3], np.arange(3), vecs[:1], np.arange(1), meta)

    real_load, calls = d.load, []

    def racing_load(version=None, **kw):
        calls.append(version)
        if len(calls) == 1:  # a newer job publishes 000003 and prunes 000002 under our feet
            publish_arrays(d, vecs, np.arange(4), vecs[:1], np.arange(1), meta)
            d.prune(keep=1)
            return real_load(version, **kw)  # raises: 000002 is gone
        return real_load(version, **kw)

    d.load = racing_load
    got = live.get()
    assert calls == ["000002", "000003"]
    assert got.version == "000003" and got.images.ntotal == 4
