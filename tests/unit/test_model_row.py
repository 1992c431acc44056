"""The model row is written once per run: on the first run, and on a model change (with the
vectors dropped in the same transaction); never on a run that keeps the model."""

from __future__ import annotations

import pytest

from indexer.job import run_job
from indexer.options import Options
from search.paths import Paths
from search.store.database import Store


@pytest.fixture
def model_writes(monkeypatch):
    calls: list[str] = []
    for name in ("set_model", "switch_model"):
        original = getattr(Store, name)

        def spy(self, *a, _name=name, _original=original, **kw):
            calls.append(_name)
            return _original(self, *a, **kw)

        monkeypatch.setattr(Store, name, spy)
    return calls


def test_the_model_row_is_written_once_per_run(
    tmp_path, tiny_encoder, tiny_model, image_factory, model_writes, monkeypatch
):
    from search.encoders.torch_clip import Encoder, ModelSpec
    from tiny_model import write_tiny_model

    monkeypatch.setenv("GLIMPSE_RUNTIME", "torch")  # no ONNX query bundle export: not what this tests
    folder = tmp_path / "pics"
    image_factory(folder, 3)
    paths = Paths.resolve(tmp_path / "home")

    run_job(paths, [str(folder)], Options(model=tiny_model, workers=0), encoder=tiny_encoder)
    assert model_writes == ["set_model"]

    model_writes.clear()
    image_factory(folder, 1, start=3)
    run_job(paths, [str(folder)], Options(workers=0), encoder=tiny_encoder)
    assert model_writes == []  # the same model: the row stays as it is

    model_writes.clear()
    other = f"local-dir:{write_tiny_model(tmp_path / 'other', seed=1)}"
    counts, _ = run_job(
        paths,
        [str(folder)],
        Options(model=other, reembed=True, workers=0),
        encoder=Encoder(ModelSpec.parse(other), device="cpu"),
    )
    assert model_writes == ["switch_model"] and counts.embedded == 4
    store = Store(paths.db)
    try:
        row = store.get_model()
        assert (row.name, row.dim) == (other, tiny_encoder.dim)
    finally:
        store.close()
