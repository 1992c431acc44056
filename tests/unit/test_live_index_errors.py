"""A published index that cannot be read is said to be unreadable, never "no published index yet"; the last good
version keeps serving. An unreadable live manifest makes the next publish a full build, and says so."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from search.vectors.live import IndexDir, IndexUnreadable, LiveIndex
from tests.index_support import publish_arrays

META = {"dim": 4, "fingerprint": "f"}
VECS = np.eye(4, dtype=np.float32)


def _publish(d: IndexDir, n: int) -> str:
    return publish_arrays(d, VECS[:n], np.arange(n), VECS[:1], np.arange(1), META)


def _corrupt(d: IndexDir, version: str) -> None:
    (d.root / version / "images.faiss").write_bytes(b"not a faiss index")


def test_an_unreadable_index_with_nothing_to_serve_says_so(tmp_path, caplog):
    d = IndexDir(tmp_path / "index")
    version = _publish(d, 2)
    _corrupt(d, version)
    live = LiveIndex(d, check_every=0.0)
    with caplog.at_level(logging.ERROR, logger="search.vectors.live"):
        with pytest.raises(IndexUnreadable) as caught:
            live.get()
    assert caught.value.http_status == 503
    assert f"the published index (version {version}) is unreadable" in str(caught.value)
    assert "no published index" not in str(caught.value)
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(logged) == 1 and "is unreadable" in logged[0].getMessage() and logged[0].exc_info  # the cause
    with pytest.raises(IndexUnreadable):  # asked again: the same answer, not logged again until a retry is due
        live.get()
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1


def test_the_last_good_version_keeps_serving_past_an_unreadable_one(tmp_path, caplog):
    d = IndexDir(tmp_path / "index")
    good = _publish(d, 2)
    live = LiveIndex(d, check_every=0.0)
    assert live.get().version == good
    bad = _publish(d, 3)
    _corrupt(d, bad)
    with caplog.at_level(logging.ERROR, logger="search.vectors.live"):
        assert live.get().version == good
    assert f"still serving version {good}" in caplog.text
    assert live.failure is not None and live.failure.startswith(f"version {bad}: ")
    fixed = _publish(d, 4)  # a new publish is loaded at once
    assert live.get().version == fixed and live.failure is None


def test_an_unreadable_live_manifest_is_a_full_build_said_in_the_log(tmp_path, caplog):
    d = IndexDir(tmp_path / "index")
    live = _publish(d, 2)
    (d.root / live / "manifest.json").write_text("{ torn")
    with caplog.at_level(logging.WARNING, logger="search.vectors.live"):
        _publish(d, 3)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"live index version {live} has an unreadable manifest" in m and "from scratch" in m for m in warned)


def test_an_unreadable_index_is_a_503_that_says_so_over_http(tmp_path, monkeypatch):
    from search.engine import Engine
    from search.paths import Paths
    from web.app import create_app

    monkeypatch.setattr("web.metrics.init_app", lambda app, engine: None)
    paths = Paths.resolve(tmp_path / "home")
    d = IndexDir(paths.index)
    _corrupt(d, _publish(d, 2))
    engine = Engine(paths)
    try:
        answer = create_app(engine, config={"GLIMPSE_ALLOWED_HOSTS": None}).test_client().get("/api/health")
    finally:
        engine.close()
    assert answer.status_code == 503 and "is unreadable" in answer.get_json()["error"]
