"""Shared by the web tests: one indexed corpus per test session, and a live server helper.

Indexing runs the real CLI once (a subprocess that imports torch), so the
corpus is cached at module level and reused by test_api, test_clip_compat and
test_pages.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import draw_image, glimpse_cmd

XSS_CAPTION = '<script>alert("x")</script> a <b>bold</b> caption'
ODD_NAME = "odd <name> & 'quote'.png"


@dataclass
class Corpus:
    home: Path
    root: Path
    files: dict[str, Path] = field(default_factory=dict)  # name -> path
    captions: dict[str, str] = field(default_factory=dict)

    def folder(self, name: str) -> Path:
        return self.root / name


_CACHE: dict[str, object] = {}


def _stamp(path: Path, day: dt.date) -> None:
    t = dt.datetime(day.year, day.month, day.day, 12, 0).timestamp()
    os.utime(path, (t, t))


def build_corpus(base: Path, tiny_model: str) -> Corpus:
    """Two folders with distinct dates, captions (one hostile), an odd file name and a broken file."""
    if "corpus" in _CACHE:
        return _CACHE["corpus"]
    root = base / "photos"
    corpus = Corpus(home=base / "home", root=root)
    for i in range(12):
        p = root / "beach" / f"beach_{i:02d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        draw_image(i, (120, 90)).save(p)
        _stamp(p, dt.date(2020, 6, 1 + i))
        corpus.files[p.name] = p
    for i in range(8):
        p = root / "city" / f"city_{i:02d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        draw_image(100 + i, (90, 120)).save(p, quality=90)
        _stamp(p, dt.date(2023, 1, 1 + i))
        corpus.files[p.name] = p
    odd = root / "city" / ODD_NAME
    draw_image(200, (100, 100)).save(odd)
    _stamp(odd, dt.date(2023, 2, 1))
    corpus.files["odd"] = odd
    # A near-duplicate (same picture, re-encoded as JPEG) for clip-retrieval's deduplicate flag.
    dup = root / "beach" / "beach_05_copy.jpg"
    draw_image(5, (120, 90)).save(dup, quality=95)
    _stamp(dup, dt.date(2021, 3, 3))
    corpus.files["dup"] = dup
    broken = root / "city" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    corpus.files["broken"] = broken
    corpus.captions = {
        "beach/beach_00.png": "a sunny beach with blue water",
        "beach/beach_01.png": "waves on the sand",
        "city/city_00.jpg": "tall buildings at night",
        f"city/{ODD_NAME}": XSS_CAPTION,
    }
    manifest = root / "captions.jsonl"
    manifest.write_text("".join(json.dumps({"path": p, "caption": c}) + "\n" for p, c in corpus.captions.items()))
    glimpse_cmd(
        "index", str(root), "--captions", str(manifest), "--model", tiny_model, "--workers", "0", home=corpus.home
    )
    _CACHE["corpus"] = corpus
    return corpus


def shared_engine(corpus: Corpus):
    """One Engine (model loaded once) for every web test module."""
    if "engine" not in _CACHE:
        from search.engine import Engine
        from search.paths import Paths

        engine = Engine(Paths.resolve(corpus.home))
        engine.warm()
        _CACHE["engine"] = engine
    return _CACHE["engine"]


def image_id(engine, path: Path) -> int:
    """The database id of a corpus file (ids are assigned by the indexer; a failed file has one too)."""
    found = engine.store.image_id_for_path(str(path))
    if found is None:
        raise LookupError(path)
    return found


class LiveServer:
    """The app under real waitress on 127.0.0.1 and a free port, in a daemon thread."""

    def __init__(self, app, threads: int = 8):
        from web.server import make_server, server_url

        self.server = make_server(app, "127.0.0.1", 0, threads)
        self.url = server_url(self.server).rstrip("/")
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.close()
        self.thread.join(timeout=5)


# Fixtures shared by test_api, test_clip_compat and test_pages (imported there by name);
# module scope, so each file gets its own engine over the one cached corpus.
@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_model):
    return build_corpus(tmp_path_factory.mktemp("web"), tiny_model)


@pytest.fixture(scope="module")
def engine(corpus):
    return shared_engine(corpus)


@pytest.fixture(scope="module")
def server(engine):
    from web.app import create_app

    live = LiveServer(create_app(engine, config={"GLIMPSE_ALLOWED_HOSTS": ["127.0.0.1"]}))
    yield live
    live.close()
