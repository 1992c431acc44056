"""Near-duplicate groups over the live index: candidates by vector, verified by pixels, no chains.

1. **Candidates.** Every stored vector (read from the store a chunk at a time, so memory stays bounded
   at any corpus size and any index type) is searched against the live index for its ``NEIGHBOURS``
   nearest; pairs at or above the cosine ``threshold`` are candidates. The default is loose, so crops
   (which move a small model's vectors a lot) are not lost here. A second source adds pairs whose pixel
   prints' small views correlate (``search.vectors.print_candidates``): a copy flattened onto black, or
   cropped 10%, which the model does not place near its original. An IVF index is searched with few lists
   (``GLIMPSE_DUPLICATES_NPROBE``): a near-copy lies in its original's list or the next. An exact index
   over more than ``EXACT_MAX`` images is searched through a transient IVF-Flat over its own vectors;
   IVF-PQ candidates are scored exactly against the stored float16 vectors.
2. **Verification.** Each candidate pair is checked by the images' pixel prints (``search.media.pixel_print``,
   stored per image at index time), a signal that does not depend on the model: a different drawing of
   the same icon set, or a colour variant, is refused there. A pair within the pixel limit but over
   ``SURE`` of it (a loose match, as close as a crop) verifies only if its difference is what small moves
   of its edges explain (``pixel_print.SHIFT_MAX``: a spade and a club are refused) and if it is
   unambiguous (neither image has another loose match the other does not share: a series of look-alikes).
3. **Groups without chains.** Images are taken by how many candidates they verify against, most first
   (the centre of a set of copies, not a copy at its edge), then transparent ones (a copy flattened on
   white and one flattened on black both match their transparent original, not each other), then keep
   order; each not yet grouped becomes a group's representative, and only images verified against *it*
   (its candidates, and theirs) join. A print without detail (a thumbnail-sized copy, compared without
   the fine check) gives way to its closest sure twin with detail (its original), so that a look-alike it
   cannot tell from that original does not join through it. A chain of near images A~B~C where A and C
   differ is never one group. The ``keep`` suggestion is the group's first image in keep order (most
   pixels, then largest file, then oldest).

Images without a pixel print (indexed before prints existed; the next index run stores them) are left
out and counted. Read-only: nothing is deleted; the ``keep`` suggestion is for a person to act on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from search.errors import InvalidValue
from search.media import pixel_print
from search.media.pixel_print import SIGNAL
from search.query.results import SearchResult, to_result
from search.settings import settings
from search.store.schema import unit_f32
from search.vectors.build import is_ivf
from search.vectors.print_candidates import print_pairs

if TYPE_CHECKING:
    import faiss

    from search.store.database import Store
    from search.vectors.live import LoadedIndex

NEIGHBOURS = 16
CHUNK = 4096
EXACT_MAX = 20_000  # an exact index larger than this is grouped through a transient IVF
SUB = 512  # queries per FAISS call (bounds the candidates' vectors held at once)
# The candidate stage's cosine, measured for the shipped model (README, "Near-duplicates";
# ``python -m bench.duplicates quality``): loose enough that crops reach verification.
DEFAULT_THRESHOLD = 0.85
VERIFY_CHUNK = 1024  # candidate pairs whose prints are decoded and compared at once
TWO_HOP_MAX = 64  # candidates of a representative's candidates checked against it directly
# Share of the pixel limit within which a pair verifies even where either image has other matches; above
# it, a match must be unambiguous (bench.duplicates quality: different images grouped 2.7% -> 0.9%).
SURE = 0.4
CLOSE = 0.5


@dataclass
class DuplicateGroup:
    """A representative and the images verified against it, in keep order: ``images[0]`` is the one to keep."""

    images: list[SearchResult]
    distances: list[float]  # each image's pixel distance to the representative (0.0 for itself)
    min_score: float  # the lowest cosine of a member to the representative
    representative: int  # the image every other one was verified against
    verified_by: str = SIGNAL

    @property
    def keep(self) -> int:
        return self.images[0].id

    def to_dict(self) -> dict:
        keys = ("id", "path", "size", "width", "height", "date")
        return {
            "keep": self.keep,
            "representative": self.representative,
            "verified_by": self.verified_by,
            "min_score": self.min_score,
            "images": [
                {**{k: getattr(r, k) for k in keys}, "distance": d} for r, d in zip(self.images, self.distances)
            ],
        }


@dataclass
class Duplicates:
    """The finder's answer: groups, and how many indexed images could not be checked (no pixel print)."""

    groups: list[DuplicateGroup]
    without_print: int = 0


def check_threshold(threshold: float) -> float:
    """A cosine similarity in (0, 1]; InvalidValue (a 400, exit 1) otherwise, NaN included."""
    t = float(threshold)
    if not 0.0 < t <= 1.0:
        raise InvalidValue("threshold must be a number in (0, 1]")
    return t


def similar_pairs(
    live: LoadedIndex,
    chunks: Iterable[tuple[np.ndarray, np.ndarray]],
    threshold: float,
    nprobe: int | None = None,
    seen: list[np.ndarray] | None = None,
    skip: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(a, b, score)`` arrays: pairs of live ids with a >= threshold neighbour link, a < b.

    A stored vector counts only when the index finds the vector itself: a row embedded after the
    live version was published is not in it and is not grouped (searches do not see it either).
    ``nprobe``: lists an IVF searches (default ``GLIMPSE_DUPLICATES_NPROBE``, at most the tuned one).
    ``seen``: if given, gets the ids found in the live index (a chunk at a time).
    ``skip``: ids the index holds that are never neighbours (video frames share the images' index: an image
    among many near frames would otherwise have its ``NEIGHBOURS`` taken by them and lose its real copy).
    """
    import faiss

    index, rerank = live.images, live.image_rerank
    n = int(index.ntotal)
    # Compact codes rank roughly: take more candidates, then keep the exact best.
    k = min(NEIGHBOURS + 1, n)
    kk = min(n, 2 * k) if rerank is not None else k
    a_parts, b_parts, s_parts = [], [], []
    if k == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    lists = int(nprobe or settings()["GLIMPSE_DUPLICATES_NPROBE"])
    spec = live.manifest.get("index_type") or {}
    params: faiss.SearchParameters | None = None
    if is_ivf(spec):
        params = faiss.SearchParametersIVF(nprobe=max(1, min(lists, int(spec.get("nprobe") or lists))))  # type: ignore[call-arg]
    elif n > EXACT_MAX:
        index, params = _transient_ivf(index, lists)
    if skip is not None and len(skip):
        skipped = faiss.IDSelectorBatch(np.ascontiguousarray(skip, np.int64))
        selector = faiss.IDSelectorNot(skipped)
        params = params or faiss.SearchParameters()
        params.sel = selector  # FAISS keeps a raw pointer: skipped and selector live until the loop ends
    for ids, vecs in chunks:
        for start in range(0, len(ids), SUB):
            part, q = ids[start : start + SUB], unit_f32(vecs[start : start + SUB])
            scores, found = index.search(q, kk, params=params)
            if rerank is not None:
                scores, found = rerank.rescore(q, found, k)
            live_row = (found == part[:, None]).any(axis=1)
            if seen is not None:
                seen.append(part[live_row])
            keep = (scores >= threshold) & (found >= 0) & (found != part[:, None]) & live_row[:, None]
            rows, cols = np.nonzero(keep)
            a, b = part[rows], found[rows, cols]
            a_parts.append(np.minimum(a, b))
            b_parts.append(np.maximum(a, b))
            s_parts.append(scores[rows, cols])
    if not a_parts:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    return np.concatenate(a_parts), np.concatenate(b_parts), np.concatenate(s_parts)


def _transient_ivf(flat_map: faiss.Index, nprobe: int) -> tuple[faiss.Index, faiss.SearchParametersIVF]:
    """An IVF-Flat over an exact index's own vectors, for this pass only: every image searched against
    every other is quadratic (100k images: 5e12 multiply-adds), a few lists per image is not. Vectors
    are kept exactly, so the scores compared with the threshold are exact cosines."""
    import faiss

    id_map: Any = faiss.downcast_index(flat_map)  # IndexIDMap2 over IndexFlatIP (search.vectors.build)
    x = faiss.downcast_index(id_map.index).reconstruct_n(0, id_map.ntotal)
    ids = faiss.vector_to_array(id_map.id_map).astype(np.int64)
    nlist = 2 ** round(math.log2(math.sqrt(len(x))))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(x.shape[1]), x.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    rows = np.random.default_rng(0).choice(len(x), min(len(x), 64 * nlist), replace=False)
    ivf.train(np.ascontiguousarray(x[np.sort(rows)]))
    ivf.add_with_ids(x, ids)
    return ivf, faiss.SearchParametersIVF(nprobe=min(nprobe, nlist))  # type: ignore[call-arg]


def _keep_first(r: SearchResult) -> tuple:
    """Keep order: most pixels, then largest file, then oldest (capture date, else mtime), then id."""
    return (-((r.width or 0) * (r.height or 0)), -(r.size or 0), r.date or "\uffff", r.id)


def max_distance() -> float:
    return float(settings()["GLIMPSE_DUPLICATES_MAX_DISTANCE"])


# What a pass has done, as it goes: (what it is doing, how many of how many), for a page to show.
ProgressFn = Callable[[str, int, int], None]
STAGES = ("comparing pictures", "indexing pixel prints", "comparing pixel prints", "checking pixels")


def _counted(chunks: Iterable[tuple[np.ndarray, Any]], stage: str, total: int, progress: ProgressFn) -> Iterator:
    """``chunks`` as they are, reporting how many rows of ``total`` have gone through ``stage``."""
    done = 0
    progress(stage, 0, total)
    for chunk in chunks:
        yield chunk
        done += len(chunk[0])
        progress(stage, min(done, total), total)


def find_duplicates(
    store: Store,
    live: LoadedIndex,
    threshold: float,
    nprobe: int | None = None,
    limit: float | None = None,
    progress: ProgressFn | None = None,
) -> Duplicates:
    """Verified groups of near-duplicates, most images first, then the closest (highest lowest cosine).

    ``threshold``: the candidates' cosine; ``limit``: the largest pixel distance that verifies a pair
    (default ``GLIMPSE_DUPLICATES_MAX_DISTANCE``); ``progress``: told what the pass is doing as it goes
    (``STAGES``, in order)."""
    limit = max_distance() if limit is None else float(limit)
    report: ProgressFn = progress or (lambda stage, done, total: None)
    images = store.counts()["images_indexed"]
    seen: list[np.ndarray] = []
    chunks = _counted(store.iter_image_vectors(live.dim, CHUNK), STAGES[0], images, report)
    a, b, score = similar_pairs(live, chunks, check_threshold(threshold), nprobe, seen, store.frame_ids())
    cosine: dict[tuple[int, int], float] = {}
    for x, y, c in zip(a.tolist(), b.tolist(), score.tolist()):
        cosine[(x, y)] = max(c, cosine.get((x, y), -1.0))
    # The second source: pairs whose pixel prints' views correlate (copies the model does not see as near).
    live_ids = np.unique(np.concatenate(seen)) if seen else np.zeros(0, np.int64)
    lists = int(nprobe or settings()["GLIMPSE_DUPLICATES_NPROBE"])
    passes = iter(STAGES[1:3])  # print_pairs reads the prints twice: to index them, then to search them
    pa, pb = print_pairs(
        lambda: _counted(store.iter_pixel_prints(CHUNK), next(passes), images, report), live_ids, lists
    )
    pairs = set(cosine) | set(zip(pa.tolist(), pb.tolist()))
    near: dict[int, set[int]] = {}
    for x, y in pairs:
        near.setdefault(x, set()).add(y)
        near.setdefault(y, set()).add(x)
    rows = store.get_images(list(near))
    shown = {i: to_result(r, None, None) for i, r in rows.items() if r.status == "indexed"}
    # A print of another version (made by an older Glimpse) counts as none: left out, counted below.
    stored = store.pixel_prints(list(shown))
    blobs = {i: blob for i, blob in stored.items() if pixel_print.is_current(blob)}
    checked: dict[tuple[int, int], float] = {}
    moved: set[tuple[int, int]] = set()  # checked pairs whose difference no small move of their edges explains

    def check(pairs: list[tuple[int, int]], counted: bool = False) -> None:
        """Pixel distances of ``pairs`` (both with a print), a chunk of prints decoded at a time."""
        for start in range(0, len(pairs), VERIFY_CHUNK):
            if counted:
                report(STAGES[3], start, len(pairs))
            part = pairs[start : start + VERIFY_CHUNK]
            # each print decoded once per chunk, however many of its pairs the chunk holds
            ids = sorted({i for pair in part for i in pair})
            row = {i: r for r, i in enumerate(ids)}
            decoded = pixel_print.decode([blobs[i] for i in ids])
            left = pixel_print.take(decoded, np.array([row[x] for x, _ in part]))
            right = pixel_print.take(decoded, np.array([row[y] for _, y in part]))
            dist, shift = pixel_print.compare(left, right)
            for (x, y), d, s in zip(part, dist.tolist(), shift.tolist()):
                checked[(x, y)] = checked[(y, x)] = d
                if s > pixel_print.SHIFT_MAX:
                    moved.update(((x, y), (y, x)))
        if counted:
            report(STAGES[3], len(pairs), len(pairs))

    check([(x, y) for x, y in sorted(pairs) if x in blobs and y in blobs], counted=True)

    def verify(rep: int, others: list[int]) -> dict[int, float]:
        """Pixel distance of each of ``others`` to ``rep``, computed once per pair."""
        check([(rep, o) for o in others if (rep, o) not in checked])
        return {o: checked[(rep, o)] for o in others}

    sure, close = SURE * limit, CLOSE * limit

    def matched(x: int, y: int) -> bool:
        """Whether a checked pair verifies: within ``sure``, or :func:`loose` and unambiguous. Ambiguous: either
        image has another loose match (over ``sure``, within the limit, whatever its shift: a look-alike refused
        for its shift still marks a series) that is neither a close twin of the other image nor, if fairly
        close (``close``), a match of it too. Members of a series of look-alike drawings (one in several
        stroke weights) match each other loosely and refuse each other here; an original with a crop, a
        rotated copy and a copy flattened on black is a star whose loose members are consistent with the rest."""
        d = checked.get((x, y), np.inf)
        if d <= sure:
            return True
        if not loose(x, y):
            return False
        for a, b in ((x, y), (y, x)):
            for k in near.get(a, ()):
                to_a, to_b = checked.get((a, k), np.inf), checked.get((b, k), np.inf)
                if k != b and sure < to_a <= limit and not (to_b <= sure or (to_a <= close and to_b <= limit)):
                    return False
        return True

    def loose(x: int, y: int) -> bool:
        """A checked pair over ``sure`` and within the limit, whose difference small moves of its edges explain
        (``pixel_print.SHIFT_MAX``): a simple drawing and a different one of the same outline (a spade and a
        club) differ over an area, a copy only along its edges."""
        return sure < checked.get((x, y), np.inf) <= limit and (x, y) not in moved

    grouped: set[int] = set()
    groups = []
    # Representatives: the image verified against the most candidates first (the centre of its copies, not a
    # copy at the edge such as a rotated one), transparent originals before their flattened copies on ties.
    degree = {i: sum(matched(i, o) for o in near[i]) for i in shown if i in blobs}
    alpha = {i for i, blob in blobs.items() if pixel_print.has_alpha(blob)}
    detailed = {i for i, blob in blobs.items() if pixel_print.is_detailed(blob)}
    for rep in sorted(degree, key=lambda i: (-degree[i], i not in alpha, _keep_first(shown[i]))):
        if rep in grouped:
            continue
        # A print without detail (a source under DETAIL_MIN pixels: a thumbnail-sized copy) is compared without
        # the fine check, so it matches more loosely than its original does: where it has a sure twin with
        # detail (its original), that twin is the one the group's members are verified against.
        if rep not in detailed:
            twins = [o for o in near[rep] if o in detailed and o not in grouped and checked[(rep, o)] <= sure]
            rep = min(twins, key=lambda o: (checked[(rep, o)], _keep_first(shown[o])), default=rep)
        direct = {o: checked[(rep, o)] for o in near[rep] if o not in grouped and o in blobs}
        members = {o: d for o, d in direct.items() if matched(rep, o)}
        # A copy the vector search paired with another copy but not with the representative (a large set of
        # copies, 16 neighbours each): reached through a verified member's verified pair, checked against rep.
        hop = {
            o
            for m in members
            for o in near[m]
            if o not in grouped and o not in direct and o != rep and o in blobs and matched(m, o)
        }
        members.update((o, d) for o, d in verify(rep, sorted(hop)[:TWO_HOP_MAX]).items() if matched(rep, o))
        if not members:
            continue
        grouped.add(rep)
        grouped.update(members)
        cos = _cosines(store, live.dim, rep, list(members), cosine)
        members[rep] = 0.0
        order = sorted(members, key=lambda i: _keep_first(shown[i]))
        groups.append(
            DuplicateGroup(
                [shown[i] for i in order], [round(members[i], 4) for i in order], round(min(cos, default=0.0), 4), rep
            )
        )
    groups.sort(key=lambda g: (-len(g.images), -g.min_score, g.images[0].id))
    return Duplicates(groups, store.count_without_print() + len(stored) - len(blobs))


def _cosines(store: Store, dim: int, rep: int, members: list[int], known: dict[tuple[int, int], float]) -> list[float]:
    """Each member's cosine to the representative: from the candidate search, else from the stored vectors."""
    out = {m: known.get((min(rep, m), max(rep, m))) for m in members}
    missing = [m for m, c in out.items() if c is None]
    if missing:
        vecs = store.vectors_of([rep, *missing], dim)
        if rep in vecs:
            base = unit_f32(vecs[rep][None])[0]
            for m in missing:
                if m in vecs:
                    out[m] = float(unit_f32(vecs[m][None])[0] @ base)
    return [float(c) for c in out.values() if c is not None]
