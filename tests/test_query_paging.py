"""Paging against brute force: for every mode and order, pages 1-5 are the whole collection ranked by
hand (every cosine from an exhaustive search, every keyword score, every caption), with no repeats and no
skips; and one request parses its text once and reads the live index once.

The corpus is larger than the first fetch (50 candidates) and the fusion pool (100), so the retrievers
are asked again for deeper pages; names repeat words so keyword scores tie; dates repeat so the date order
has ties; the live version's floor is set inside the cosines so the floor split is exercised.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import draw_image, glimpse_cmd

N = 150
WORDS = ["beach", "dog", "sunset", "beach dog", "city"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_model):
    base = tmp_path_factory.mktemp("paging")
    root = base / "photos"
    for i in range(N):
        folder = root / ("trips" if i % 3 == 0 else "home")
        folder.mkdir(parents=True, exist_ok=True)
        word = WORDS[i % len(WORDS)].replace(" ", "_") if i % 4 else "plain"
        p = folder / f"{word}_{i:03d}.png"
        draw_image(1000 + i).save(p)
        day = 1 + (i % 20)  # 20 distinct dates: ties in the date order
        t = 1_700_000_000 + day * 86_400
        os.utime(p, (t, t))
    manifest = base / "captions.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"path": str(p.relative_to(base)), "caption": f"a photo of a {WORDS[n % len(WORDS)]} {n}"})
            + "\n"
            for n, p in enumerate(sorted(root.rglob("*.png")))
            if n % 2 == 0
        )
    )
    home = base / "home"
    glimpse_cmd("index", str(root), "--captions", str(manifest), "--model", tiny_model, "--workers", "0", home=home)
    return home, root


@pytest.fixture(scope="module")
def engine(corpus):
    from search.engine import Engine
    from search.paths import Paths

    home, _ = corpus
    eng = Engine(Paths.resolve(str(home)))
    yield eng
    eng.close()


def set_floor(engine, floor: float | None) -> None:
    """Give the live version a floor (the tiny model's cosines are all under the estimated one)."""
    index = Path(engine.paths.index)
    path = index / (index / "current").read_text().strip() / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["floor"] = floor
    path.write_text(json.dumps(manifest))
    engine.live().manifest["floor"] = floor


def reference(engine, query, filters) -> list[tuple[int, float | None]]:
    """The whole collection ranked by hand for ``query``: [(id, score shown)], best first."""
    from search.query.fusion import ALPHA, FUSION_POOL
    from search.query.keywords import keyword_plan
    from search.query.kinds import parse_query
    from search.query.plan import DATE_ORDER_POOL

    store, live = engine.store, engine.live()
    rows = {i: r for i, r in store.result_rows(list(range(1, 10 * N))).items() if r.status == "indexed"}
    folder = os.path.abspath(filters.folder) if filters.folder else None
    keep = {i for i, r in rows.items() if folder is None or r.path.startswith(folder + os.sep)}
    dates = {i: engine.image(i).date for i in keep}
    keep = {i for i in keep if (not filters.date_from or dates[i][:10] >= filters.date_from)}
    floor = live.manifest.get("floor") if query.mode in ("images", "auto") else None
    ids = sorted(keep)

    def cosines(vec):
        scores, found = live.search(np.asarray(vec, np.float32)[None, :], live.images.ntotal, None)
        return {int(i): float(s) for i, s in zip(found[0], scores[0]) if int(i) in keep}

    terms = parse_query(query.text)
    plan = keyword_plan(terms)

    def kw_scores():
        out: dict[int, float] = {}
        for match, weight in plan.positive:
            for i, s in store.keyword_scores(match, ids).items():
                out[i] = out.get(i, 0.0) + weight * s
        return out

    negative = store.keyword_matches(plan.negative, ids) if plan.negative else set()
    by_relevance = filters.order == "relevance"
    if query.mode == "keywords":
        kw = kw_scores()
        ranked = sorted(((-s, i) for i, s in kw.items() if i not in negative))
        out = [(i, None) for _, i in ranked]
    elif query.mode == "captions":
        vec = engine.query_vector(query)
        scores, found = live.search_captions(np.asarray(vec, np.float32)[None, :], live.captions.ntotal)
        caps = store.captions_by_ids([int(c) for c in found[0]])
        best: dict[int, float] = {}
        for c, s in zip(found[0], scores[0]):
            image_id = caps[int(c)][0]
            if image_id in keep and image_id not in best:
                best[image_id] = float(s)
        out = [(i, s) for s, i in sorted((-s, i) for i, s in best.items())]
        out = [(i, -s) for i, s in out]
    else:
        cos = cosines(engine.query_vector(query))
        if filters.min_score is not None:
            cos = {i: s for i, s in cos.items() if s >= filters.min_score}
        all_kw = {}
        for match, weight in plan.positive:
            top = store.keyword_ranking(match, 1)
            all_kw[match] = weight * (top[0][1] if top else 0.0)
        if query.mode == "images" or not any(all_kw.values()) or not plan.positive:
            ranked = sorted((-s, i) for i, s in cos.items())
            out = [(i, -s) for s, i in ranked]
        else:
            best_kw = sum(all_kw.values())
            kw = kw_scores()
            vis = sorted(cos.values(), reverse=True)
            hi, lo = vis[0], vis[min(FUSION_POOL, len(vis)) - 1]

            def key(i):
                c = cos[i]
                k = 0.0 if i in negative else kw.get(i, 0.0)
                fused = ALPHA * min(1.0, max(0.0, (c - lo) / (hi - lo))) + (1 - ALPHA) * k / best_kw
                above = floor is None or not by_relevance or c >= floor or k > 0
                return (0 if above else 1, 1 if i in negative else 0, -fused, -c, i)

            out = [(i, cos[i]) for i in sorted(cos, key=key)]
    if not by_relevance:
        pool = out[:DATE_ORDER_POOL]
        out = sorted(pool, key=lambda p: dates[p[0]], reverse=True)
    return out


CASES = [
    ("images", "beach"),
    ("auto", "beach"),
    ("auto", "2:beach + sunset - dog"),
    ("auto", "nothing-like-this-word"),
    ("keywords", "beach"),
    ("keywords", "dog + sunset - city"),
    ("captions", "a photo of a dog"),
]


@pytest.mark.parametrize("order", ["relevance", "date"])
@pytest.mark.parametrize("mode,text", CASES)
def test_pages_equal_brute_force(engine, mode, text, order):
    from search.query.kinds import Filters, Paging, TextQuery

    set_floor(engine, None)
    query = TextQuery(text, mode=mode)
    root = Path(engine.paths.db).parent.parent / "photos"
    for filters in (Filters(order=order), Filters(order=order, folder=str(root / "trips"), date_from="2023-11-20")):
        expected = reference(engine, query, filters)
        for k in (7, 25):
            got: list[int] = []
            for page in range(5):
                answer = engine.search(query, filters, Paging(k=k, page=page))
                got += [r.id for r in answer.results]
                assert answer.has_more == (len(expected) > (page + 1) * k), (mode, text, order, k, page)
            want = [i for i, _ in expected[: 5 * k]]
            assert got == want, (mode, text, order, filters, k)
            assert len(set(got)) == len(got)


@pytest.mark.parametrize("text", ["beach", "2:beach + sunset - dog"])
def test_auto_pages_with_a_floor_equal_brute_force(engine, text):
    """The floor split (above it first: cosine over it or a keyword match) and min_score=auto, which keeps
    only what is above it, page like the rest."""
    from search.query.kinds import Filters, Paging, TextQuery

    query = TextQuery(text, mode="auto")
    cos = sorted(engine.search(TextQuery(text, mode="images"), None, Paging(k=200)).results, key=lambda r: -r.score)
    set_floor(engine, cos[30].score)  # 30 images above it by cosine, plus the keyword matches
    try:
        expected = reference(engine, query, Filters())
        pages = [engine.search(query, Filters(), Paging(k=20, page=p)) for p in range(5)]
        got = [r.id for page in pages for r in page.results]
        assert got == [i for i, _ in expected[:100]]
        above = pages[0].above_floor
        assert above is not None and 30 <= above < 100  # the divider falls inside the pages
        assert all(p.above_floor == above for p in pages)
        auto = Filters(min_score_auto=True)
        cut = [r.id for p in range(5) for r in engine.search(query, auto, Paging(k=20, page=p)).results]
        assert cut == got[:above]
    finally:
        set_floor(engine, None)


def test_one_parse_and_one_live_snapshot_per_request(engine, monkeypatch):
    import search.query.plan as plan_module
    from search.query.kinds import Filters, Paging, TextQuery

    parses: list[str] = []
    real_parse = plan_module.parse_query
    monkeypatch.setattr(plan_module, "parse_query", lambda *a, **kw: parses.append(a[0]) or real_parse(*a, **kw))
    snapshots: list[int] = []
    real_get = engine.index.get
    monkeypatch.setattr(engine.index, "get", lambda: snapshots.append(1) or real_get())
    for mode in ("auto", "keywords", "captions", "images"):
        for order in ("relevance", "date"):
            parses.clear()
            snapshots.clear()
            engine.search(TextQuery("2:beach + sunset - dog", mode=mode), Filters(order=order), Paging(k=5, page=2))
            assert len(parses) == 1 and len(snapshots) == 1, (mode, order, parses, snapshots)
