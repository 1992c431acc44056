"""The embed stage is a seam: any EmbedRunner plugs into the indexer unchanged (how a Ray runner would)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np

from indexer.decode import Loaded
from indexer.hashing import file_hash
from indexer.job import run_job
from indexer.options import Options
from indexer.runner import EmbeddedBatch, EmbedRequest
from search.paths import Paths
from search.store.database import Store


class FakeRunner:
    """Embeds nothing: one-hot vectors by request position, a decode error for 'bad' files,
    and a made-up content hash, in batches of two."""

    def __init__(self, dim: int):
        self.dim = dim
        self.seen: list[EmbedRequest] = []

    def run(self, requests: Sequence[EmbedRequest]) -> Iterator[EmbeddedBatch]:
        self.seen = list(requests)
        for start in range(0, len(requests), 2):
            items = [
                Loaded(
                    i,
                    None,
                    {"width": 7, "height": 5, "format": "PNG"},
                    "cannot decode image: fake" if "bad" in requests[i].path else None,
                    f"hash-{i}" if requests[i].want_hash else None,
                )
                for i in range(start, min(start + 2, len(requests)))
            ]
            ok = [it for it in items if it.error is None]
            yield EmbeddedBatch(items, ok, np.eye(self.dim, dtype=np.float32)[[it.index for it in ok]])

    def busy(self) -> dict[str, float]:
        return {"fake": 0.0}


def test_a_fake_runner_plugs_in_and_its_results_land_in_the_store(tmp_path, tiny_encoder, tiny_model, monkeypatch):
    monkeypatch.setenv("GLIMPSE_RUNTIME", "torch")  # no ONNX query bundle export: not what this tests
    folder = tmp_path / "pics"
    folder.mkdir()
    for name in ("a.png", "b.png", "bad.png", "c.png", "d.png"):
        (folder / name).write_bytes(name.encode() * 3)  # never decoded: the runner is fake
    paths = Paths.resolve(tmp_path / "home")
    runner = FakeRunner(tiny_encoder.dim)

    counts, version = run_job(paths, [str(folder)], Options(model=tiny_model), encoder=tiny_encoder, runner=runner)

    assert sorted(r.path for r in runner.seen) == sorted(str(p) for p in folder.iterdir())
    assert all(r.want_hash for r in runner.seen)  # nothing hashed up front on a fresh index
    assert (counts.new, counts.embedded, counts.failed) == (5, 4, 1)
    assert version is not None
    store = Store(paths.db)
    try:
        for i, req in enumerate(runner.seen):
            row = store.get_image(store.image_id_for_path(req.path))
            assert row.content_hash == f"hash-{i}"
            if "bad" in req.path:
                assert row.status == "failed" and row.error == "cannot decode image: fake"
            else:
                assert row.status == "indexed" and (row.width, row.height, row.format) == (7, 5, "PNG")
                stored = store.vectors_of([row.id], tiny_encoder.dim)[row.id]
                np.testing.assert_allclose(stored, np.eye(tiny_encoder.dim)[i])
        assert store.get_model().dim == tiny_encoder.dim
        assert store.recent_jobs(1)[0].outcome == "ok" and store.recent_jobs(1)[0].embedded == 4
    finally:
        store.close()


def test_a_file_hashed_by_the_plan_is_not_hashed_again_by_the_runner(tmp_path, tiny_encoder, tiny_model, monkeypatch):
    """Hash once: a changed file of the same size is hashed up front (it might be a touch); the
    runner is then not asked for its hash, and the plan's hash is the one stored."""
    monkeypatch.setenv("GLIMPSE_RUNTIME", "torch")
    folder = tmp_path / "pics"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"aaaa")
    (folder / "b.png").write_bytes(b"bbbb")
    paths = Paths.resolve(tmp_path / "home")
    run_job(paths, [str(folder)], Options(), encoder=tiny_encoder, runner=FakeRunner(tiny_encoder.dim))
    (folder / "a.png").write_bytes(b"cccc")  # same size, other bytes
    os.utime(folder / "a.png", (2_000_000_000, 2_000_000_000))
    runner = FakeRunner(tiny_encoder.dim)
    counts, _ = run_job(paths, [str(folder)], Options(), encoder=tiny_encoder, runner=runner)
    assert [(r.path, r.want_hash) for r in runner.seen] == [(str(folder / "a.png"), False)]
    assert (counts.changed, counts.unchanged) == (1, 1)
    store = Store(paths.db)
    try:
        assert store.get_image(store.image_id_for_path(str(folder / "a.png"))).content_hash == file_hash(
            str(folder / "a.png")
        )
    finally:
        store.close()
