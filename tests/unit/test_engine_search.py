"""Engine.search paging against brute force on a tiny index: pages continue each other, has_more is exact."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import search.query.args as args_module
import search.query.plan as plan_module
from conftest import make_images
from indexer.pipeline import Options, run_job
from search.engine import Engine, Filters
from search.paths import Paths
from search.query.kinds import Paging, SimilarQuery, TextQuery, VectorQuery
from search.store.database import Store

N = 30


@pytest.fixture(scope="module")
def engine(tmp_path_factory, tiny_model):
    """N images, each with one caption, with mtimes that do not follow their names (so date order differs)."""
    root = tmp_path_factory.mktemp("paging")
    folder = root / "photos"
    paths = make_images(folder, N)
    for i, p in enumerate(paths):
        t = 1_600_000_000 + ((i * 7) % N) * 86_400
        os.utime(p, (t, t))
    manifest = root / "captions.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"path": f"photos/{p.name}", "caption": f"caption {i} of a scene"}) + "\n"
            for i, p in enumerate(paths)
        )
    )
    home = Paths.resolve(str(root / "home"))
    run_job(home, [str(folder)], Options(model=tiny_model, workers=0, captions=str(manifest)))
    eng = Engine(home)
    yield eng
    eng.close()


def ranking(engine: Engine, vec: np.ndarray) -> list[int]:
    """Every indexed image, best first, by exact cosine over the stored vectors."""
    vecs, ids = Store(engine.paths.db).image_vectors(engine.encoder.dim)
    order = np.argsort(-(vecs @ vec), kind="stable")
    return [int(ids[i]) for i in order]


def all_pages(engine: Engine, query, k: int, filters: Filters | None = None):
    """Page through until has_more is False (bounded, in case it never is)."""
    pages = []
    for number in range(N + 2):
        page = engine.search(query, filters, Paging(k=k, page=number))
        assert (page.k, page.page) == (k, number)
        pages.append(page)
        if not page.has_more:
            return pages
    raise AssertionError("has_more never became False")


@pytest.mark.parametrize("k", [1, 7, 10, 29, 30, 31])
def test_pages_continue_each_other_and_match_brute_force(engine, k):
    query = TextQuery("a scene at dusk")
    expected = ranking(engine, engine.query_vector(query))
    pages = all_pages(engine, query, k)
    assert [r.id for p in pages for r in p.results] == expected
    assert all(len(p.results) == k for p in pages[:-1]) and 1 <= len(pages[-1].results) <= k
    assert len(pages) == -(-N // k)  # the last page is the one that says no more: never an empty page after it


def test_has_more_at_the_boundary(engine):
    query = TextQuery("boundary")
    assert engine.search(query, page=Paging(k=10, page=1)).has_more  # 20 of 30 shown
    last = engine.search(query, page=Paging(k=10, page=2))  # exactly the last 10
    assert len(last.results) == 10 and not last.has_more
    past = engine.search(query, page=Paging(k=10, page=3))
    assert past.results == [] and not past.has_more
    assert not engine.search(query, page=Paging(k=N)).has_more
    assert engine.search(query, page=Paging(k=N - 1)).has_more


def test_has_more_counts_only_results_that_pass_the_filters(engine):
    query = TextQuery("filtered")
    expected = ranking(engine, engine.query_vector(query))
    scores = [r.score for r in engine.search(query, page=Paging(k=N)).results]
    cut = Filters(min_score=scores[11])  # exactly 12 results pass
    assert [r.id for p in all_pages(engine, query, 4, cut) for r in p.results] == expected[:12]
    assert not engine.search(query, cut, Paging(k=6, page=1)).has_more
    assert engine.search(query, cut, Paging(k=6, page=0)).has_more


def test_similar_pages_leave_the_image_out(engine):
    first = engine.search(TextQuery("x"), page=Paging(k=1)).results[0]
    vec = engine.query_vector(SimilarQuery(first.id))
    expected = [i for i in ranking(engine, vec) if i != first.id]
    pages = all_pages(engine, SimilarQuery(first.id), 10)
    assert [r.id for p in pages for r in p.results] == expected  # 29: the third page ends it
    assert len(pages) == 3 and len(pages[-1].results) == 9


def test_a_raw_vector_pages_like_its_text(engine):
    text = TextQuery("2:beach + sunset - people")
    as_vector = VectorQuery(engine.query_vector(text))
    for number in range(3):
        a, b = (engine.search(q, page=Paging(k=12, page=number)) for q in (text, as_vector))
        assert [r.id for r in a.results] == [r.id for r in b.results] and a.has_more == b.has_more


def test_date_order_pages_continue_newest_first(engine):
    pages = all_pages(engine, TextQuery("dated"), 8, Filters(order="date"))
    dates = [r.date for p in pages for r in p.results]
    assert len(dates) == N and len(set(dates)) == N and dates == sorted(dates, reverse=True)


def test_caption_pages_continue_and_show_each_image_once(engine):
    query = TextQuery("caption 3 of a scene", mode="captions")
    full = engine.search(query, page=Paging(k=N))
    assert full.results[0].matched_caption == "caption 3 of a scene" and not full.has_more
    pages = all_pages(engine, query, 7)
    assert [r.id for p in pages for r in p.results] == [r.id for r in full.results]
    assert len({r.id for r in full.results}) == len(full.results) == N


def test_no_page_reaches_past_max_k(engine, monkeypatch):
    """has_more stays False on the page that ends at MAX_K: a client cannot page deeper (web.params refuses)."""
    monkeypatch.setattr(plan_module, "MAX_K", 20)
    monkeypatch.setattr(args_module, "MAX_K", 20)
    query = TextQuery("deep")
    assert engine.search(query, page=Paging(k=10, page=0)).has_more
    ends_at_max = engine.search(query, page=Paging(k=10, page=1))
    assert len(ends_at_max.results) == 10 and not ends_at_max.has_more
    with pytest.raises(args_module.BadSearchValue, match="k must be between"):
        engine.search(query, page=Paging(k=21))
