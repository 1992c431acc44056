"""The near-duplicate finder's second candidate source: nearest neighbours among the pixel prints' views.

The embedding model does not see every copy as near its original: a transparent drawing flattened onto
black scores a cosine of ~0.04 with the shipped model, and a 10% crop falls under the candidate
threshold about half the time. Each stored print (``search.media.pixel_print``) gives small views (its
luminance on a 16x16 grid, as a correlation vector: on white and, with alpha, on black; whole and
centred crops of 5% and 10% a side). Every whole view goes into a FAISS index; every view of every image
is searched for its ``NEIGHBOURS`` nearest, and pairs correlating at ``CORRELATION`` or more are
candidates. So a copy on black meets its original's black view, and a crop its original's crop view.
Verification (the full print comparison) then decides, as for the model's candidates.

Memory is bounded: prints are read and decoded a chunk at a time, twice (once to index the whole views,
held as float16 until the index is built, once to search); an index of more than ``EXACT_MAX`` views is
an IVF with 8-bit scalar codes (256 bytes a view).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from search.media import pixel_print

NEIGHBOURS = 4  # measured (bench.duplicates quality): 4 finds what 8 finds once the model's candidates are added
CORRELATION = 0.9  # of two 16x16 views; copies (resize, JPEG, flattening, 2-10% crops, 2-4 degrees) score above
EXACT_MAX = 20_000  # views; above this an IVF-SQ8
SUB = 2048  # views searched per FAISS call
ADD_CHUNK = 65_536  # views added to the index at once


def _views(chunks: Iterable[tuple[np.ndarray, list[bytes]]], live: np.ndarray | None) -> Iterator[tuple]:
    """``(ids, whole, vectors)`` of each chunk's usable views (current prints of live images only)."""
    for ids, blobs in chunks:
        keep = [k for k, b in enumerate(blobs) if pixel_print.is_current(b)]
        ids = ids[keep]
        if live is not None:
            inside = np.isin(ids, live)
            ids, keep = ids[inside], [k for k, x in zip(keep, inside) if x]
        if not len(ids):
            continue
        rows, whole, vecs, ok = pixel_print.views(pixel_print.decode([blobs[k] for k in keep]))
        yield ids[rows[ok]], whole[ok], vecs[ok]


def print_pairs(
    chunks: Callable[[], Iterable[tuple[np.ndarray, list[bytes]]]], live: np.ndarray | None, nprobe: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` arrays of image ids, a < b, whose views correlate at ``CORRELATION`` or more.

    ``chunks``: called twice, each time an iterable of ``(ids, prints)`` (``Store.iter_pixel_prints``);
    ``live``: the ids that may be paired (those in the live index), or None for all."""
    import faiss

    ids_parts, vec_parts = [], []
    for ids, whole, vecs in _views(chunks(), live):
        ids_parts.append(ids[whole])
        vec_parts.append(vecs[whole].astype(np.float16))
    empty = np.zeros(0, np.int64)
    if not ids_parts:
        return empty, empty
    owner = np.concatenate(ids_parts)
    x = np.concatenate(vec_parts)  # float16: 512 bytes a view (1M images: ~0.6 GB with black views)
    del vec_parts
    dim = x.shape[1]
    params = None
    index: faiss.Index
    if len(x) <= EXACT_MAX:
        index = faiss.IndexFlatIP(dim)
    else:
        nlist = 2 ** round(math.log2(math.sqrt(len(x))))
        index = faiss.IndexIVFScalarQuantizer(
            faiss.IndexFlatIP(dim), dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        sample = np.random.default_rng(0).choice(len(x), min(len(x), 64 * nlist), replace=False)
        index.train(x[np.sort(sample)].astype(np.float32))
        params = faiss.SearchParametersIVF(nprobe=min(nprobe, nlist))  # type: ignore[call-arg]
    for start in range(0, len(x), ADD_CHUNK):  # float32 a chunk at a time
        index.add(x[start : start + ADD_CHUNK].astype(np.float32))
    del x
    k = min(NEIGHBOURS + 1, index.ntotal)
    a_parts, b_parts = [], []
    for ids, _, vecs in _views(chunks(), live):
        for start in range(0, len(ids), SUB):
            scores, found = index.search(vecs[start : start + SUB], k, params=params)
            near = (found >= 0) & (scores >= CORRELATION)
            rows, cols = np.nonzero(near)
            a, b = ids[start + rows], owner[found[rows, cols]]
            other = a != b
            a_parts.append(np.minimum(a, b)[other])
            b_parts.append(np.maximum(a, b)[other])
    if not a_parts:
        return empty, empty
    pairs = np.unique(np.stack([np.concatenate(a_parts), np.concatenate(b_parts)], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]
