"""`--engine ray` without a cluster address: a run with fewer than GLIMPSE_RAY_MIN_FILES files to embed
is embedded by the local runner (no private Ray cluster started); an address keeps Ray whatever the size.
The end-to-end check (a reindex of 5 files imports no Ray) is tests/test_ray.py."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from indexer.options import Options
from indexer.ray_runner import RayRunner
from indexer.runner import LocalRunner


def runner(address: str | None = None, workers: int | None = None) -> RayRunner:
    r = RayRunner(Options(workers=workers), address=address)
    r.prepare(SimpleNamespace(spec=None, device="cpu"))  # type: ignore[arg-type]  # only its device is read
    return r


@pytest.fixture(autouse=True)
def no_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("GLIMPSE_RAY_MIN_FILES", "100")


def test_below_the_threshold_without_an_address_the_local_runner_embeds_and_one_line_says_why(caplog):
    with caplog.at_level(logging.INFO, logger="glimpse.indexer"):
        local = runner(workers=6).local_instead(99)
    assert isinstance(local, LocalRunner)
    assert local.opts.workers is None  # --workers counted Ray workers, not decode processes
    why = [r.getMessage() for r in caplog.records if "without Ray" in r.getMessage()]
    assert why == [
        "embedding 99 file(s) on this machine without Ray: fewer than GLIMPSE_RAY_MIN_FILES=100, below which "
        "starting a private Ray cluster costs more than it saves (give --ray-address to use a cluster)"
    ]


def test_at_the_threshold_ray_embeds():
    assert runner().local_instead(100) is None


@pytest.mark.parametrize("how", ["option", "RAY_ADDRESS"])
def test_a_cluster_address_keeps_ray_whatever_the_size(monkeypatch, how):
    if how == "RAY_ADDRESS":
        monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
        r = runner()
    else:
        r = runner(address="10.0.0.1:6379")
    assert r.local_instead(1) is None


def test_zero_means_always_ray(monkeypatch):
    monkeypatch.setenv("GLIMPSE_RAY_MIN_FILES", "0")
    assert runner().local_instead(1) is None
