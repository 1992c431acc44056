"""Query semantics, shared by the CLI and the web app: one entry, :meth:`Engine.search`.

Text→image, image→image, "more like this", text→caption, raw vectors and weighted
combinations (search.query says what a query is), with filters, ordering and paging.
Returns plain :class:`SearchResult` objects in a :class:`Page`; callers never see FAISS or SQL.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from search.duplicates import DuplicateGroup, check_threshold, find_duplicates
from search.errors import EngineError, ImageUnavailable, NotIndexedError
from search.floor import count_above, floor_for, resolve_auto
from search.images import Source, load_rgb_bounded
from search.index import IndexDir, LiveIndex
from search.model_spec import ModelSpec
from search.opened import OpenedImage, open_row
from search.paths import Paths
from search.query import (
    FileQuery,
    Filters,
    ImageQuery,
    Paging,
    Query,
    SimilarQuery,
    TextQuery,
    VectorQuery,
    parse_query,
)
from search.results import Page, SearchResult, to_result
from search.settings import settings
from search.stages import stage
from search.status import health, job_dict, stats
from search.store import Store

if TYPE_CHECKING:
    from search.encoders import ImageTextEncoder

log = logging.getLogger(__name__)

__all__ = [
    "Engine",
    "EngineError",
    "ImageUnavailable",
    "NotIndexedError",
    "OpenedImage",
    "Page",
    "SearchResult",
    "job_dict",
]


# How many relevant results "order by date" re-sorts.
DATE_ORDER_POOL = 200


def _single_query_threads() -> None:
    """One FAISS thread per query (GLIMPSE_QUERY_THREADS overrides).

    A single query vector gains nothing from FAISS's OpenMP pool, and on a small
    CPU that pool (a second OpenMP runtime beside torch's) spins while the text
    encoder runs: measured on 2 cores, a text query took 1.4 s with the default
    pool and 0.10 s with one thread (bench/run.py, BENCHMARKS.md). Index builds
    happen in the indexer, which never creates an Engine.
    """
    import faiss

    faiss.omp_set_num_threads(settings()["GLIMPSE_QUERY_THREADS"])


class Engine:
    """One per process: the store, the live index and the (lazily) loaded encoder."""

    def __init__(
        self,
        paths: Paths,
        encoder: ImageTextEncoder | None = None,
        device: str | None = None,
        index_check_every: float = 1.0,
    ):
        self.paths = paths
        _single_query_threads()
        self.store = Store(paths.db)
        self.index = LiveIndex(IndexDir(paths.index), check_every=index_check_every)
        self._encoder = encoder
        self._device = device
        self._encoder_lock = threading.Lock()
        self._duplicates: tuple[tuple[str, float], list[DuplicateGroup]] | None = None

    @classmethod
    def open(cls, home: str | None = None, **kw) -> Engine:
        return cls(Paths.resolve(home), **kw)

    def close(self) -> None:
        self.store.close()

    # ------------------------------------------------------------ model
    def model_spec(self) -> ModelSpec:
        row = self.store.get_model()
        if row is None:
            raise NotIndexedError("nothing indexed yet: run `glimpse index PATH` first")
        return ModelSpec(row.name, row.pretrained)

    @property
    def encoder(self) -> ImageTextEncoder:
        """The model the vectors were made with; loaded once, kept for every query.

        On CPU that is the ONNX Runtime query bundle (no torch in the process; see
        ``search.query_bundle``), else open_clip in torch.
        """
        if self._encoder is None:
            with self._encoder_lock:
                if self._encoder is None:
                    from search.encoders import open_encoder

                    self._encoder = open_encoder(self.model_spec(), "query", device=self._device)
        return self._encoder

    def warm(self) -> None:
        """Load model and index now, and run both towers once, so the first query is as fast as the next."""
        self._live()
        from PIL import Image

        enc = self.encoder
        enc.encode_texts(["warm up"])
        enc.encode_pil([Image.new("RGB", (enc.image_size, enc.image_size), "white")])

    def _live(self):
        live = self.index.get()
        if live is None:
            raise NotIndexedError("no published index yet: run `glimpse index PATH` first")
        return live

    # ------------------------------------------------------------ vectors
    @stage("encode")
    def _text_vector(self, text: str) -> np.ndarray:
        if not text or not text.strip():
            raise EngineError("empty query")
        return self.encoder.encode_texts([text])[0]

    @stage("encode")
    def _image_vector(self, source: Source) -> np.ndarray:
        # Same draft-mode decode as the indexer, so a file finds its own vector; under the decode
        # budget, since a server runs many of these at once.
        img = load_rgb_bounded(source, self.encoder.image_size)
        return self.encoder.encode_pil([img])[0]

    def _combined_vector(self, text: str, allow_files: bool) -> np.ndarray:
        """Weighted text (and, for the CLI, image-file) terms; negatives subtract."""
        try:
            terms = parse_query(text or "", allow_files=allow_files)
        except ValueError as exc:
            raise EngineError(str(exc)) from exc
        total = np.zeros(self.encoder.dim, np.float32)
        for term in terms:
            vec = self._image_vector(os.path.expanduser(term.text)) if term.is_image else self._text_vector(term.text)
            total += term.weight * vec
        norm = float(np.linalg.norm(total))
        if norm < 1e-9:
            raise EngineError("the query terms cancel out")
        return total / norm

    def query_vector(self, query: Query) -> np.ndarray:
        """The vector a query is searched with (captions mode: the one text vector of the whole text)."""
        if isinstance(query, TextQuery):
            if query.mode == "captions":
                return self._text_vector(query.text)
            return self._combined_vector(query.text, query.allow_files)
        if isinstance(query, ImageQuery):
            return self._image_vector(query.data)
        if isinstance(query, FileQuery):
            return self._image_vector(query.path)
        if isinstance(query, SimilarQuery):
            vec = self.store.vectors_of([query.image_id], self.encoder.dim).get(int(query.image_id))
            if vec is None:
                raise EngineError(f"image {query.image_id} is not indexed")
            return vec
        if isinstance(query, VectorQuery):
            return np.asarray(query.vector, np.float32).reshape(-1)
        raise TypeError(f"not a query: {query!r}")

    def vectors_of(self, image_ids: Iterable[int]) -> dict[int, np.ndarray]:
        """Stored vectors by image id (for deduplication); ids without one are left out."""
        return self.store.vectors_of(image_ids, self.encoder.dim)

    # ------------------------------------------------------------ search
    def search(self, query: Query, filters: Filters | None = None, page: Paging | None = None) -> Page:
        """The one search entry: any query kind, filters, one page and whether another follows.

        One result past the page is asked for so ``has_more`` is exact (immich's ``limit(size + 1)``);
        never past MAX_K results, the deepest a client may page.
        """
        page = page or Paging()
        k, number = _check_paging(page.k, page.page)
        floor = floor_for(query, self._live().manifest)
        filters = resolve_auto(filters or Filters(), floor)
        end = (number + 1) * k
        want = end + 1 if end < MAX_K else end
        if isinstance(query, TextQuery) and query.mode == "captions":
            found = self._caption_results(query.text, want, filters)
        else:
            vec = self.query_vector(query)
            exclude = {int(query.image_id)} if isinstance(query, SimilarQuery) else set()
            found = self._image_results(vec, want, filters, exclude)
        return Page(
            found[number * k : end],
            has_more=len(found) > end,
            k=k,
            page=number,
            floor=floor,
            above_floor=count_above(found, floor, filters.order),
        )

    def _image_results(self, vec: np.ndarray, want: int, filters: Filters, exclude: set[int]) -> list[SearchResult]:
        """The best ``want`` results (by date: the relevant pool, newest first)."""
        live = self._live()
        self._check_dim(live, vec)
        results = self._collect(
            live.images, vec, DATE_ORDER_POOL if filters.order == "date" else want, filters, exclude
        )
        if filters.order == "date":
            results.sort(key=lambda r: r.date or "", reverse=True)
        return results

    def _caption_results(self, text: str, want: int, filters: Filters) -> list[SearchResult]:
        """Text against caption vectors; each image once, with its best caption."""
        live = self._live()
        if live.captions is None or live.captions.ntotal == 0:
            return []
        vec = self._text_vector(text)
        self._check_dim(live, vec)
        fetch = min(live.captions.ntotal, max(want * 4, 50))
        while True:
            with stage("faiss"):
                scores, ids = live.captions.search(vec[None, :].astype(np.float32), fetch)
            pairs = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
            caps = self.store.captions_by_ids([i for i, _ in pairs])
            best: dict[int, tuple[float, str]] = {}
            for cid, score in pairs:
                if cid in caps:
                    image_id, caption = caps[cid]
                    if image_id not in best:
                        best[image_id] = (score, caption)
            results = self._hydrate([(iid, s) for iid, (s, _) in best.items()], filters)
            for r in results:
                r.matched_caption = best[r.id][1]
                r.caption = r.matched_caption
            if len(results) >= want or fetch >= live.captions.ntotal:
                break
            fetch = min(live.captions.ntotal, fetch * 4)
        if filters.order == "date":
            results.sort(key=lambda r: r.date or "", reverse=True)
        return results

    def _collect(self, index, vec: np.ndarray, want: int, filters: Filters, exclude: set[int]) -> list[SearchResult]:
        """Over-fetch from FAISS until enough results survive filters and deletions."""
        total = index.ntotal
        if total == 0:
            return []
        fetch = min(total, want + len(exclude) + (want * 4 if filters.active() else 8))
        while True:
            with stage("faiss"):
                scores, ids = index.search(vec[None, :].astype(np.float32), fetch)
            pairs = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0 and int(i) not in exclude]
            results = self._hydrate(pairs, filters)
            below_cut = filters.min_score is not None and pairs and pairs[-1][1] < filters.min_score
            if len(results) >= want or fetch >= total or below_cut:
                return results[:want] if filters.order != "date" else results
            fetch = min(total, fetch * 4)

    @stage("hydrate")
    def _hydrate(self, pairs: Sequence[tuple[int, float]], filters: Filters) -> list[SearchResult]:
        if filters.min_score is not None:
            pairs = [(i, s) for i, s in pairs if s >= filters.min_score]
        rows = self.store.get_images([i for i, _ in pairs])
        captions = self.store.primary_captions(list(rows))
        folder = os.path.abspath(os.path.expanduser(filters.folder)) if filters.folder else None
        out = []
        for image_id, score in pairs:
            row = rows.get(image_id)
            if row is None or row.status != "indexed":
                continue  # deleted since the index was published
            result = to_result(row, score, captions.get(image_id))
            if folder and not (row.path == folder or row.path.startswith(folder.rstrip(os.sep) + os.sep)):
                continue
            day = (result.date or "")[:10]
            if filters.date_from and day < filters.date_from:
                continue
            if filters.date_to and day > filters.date_to:
                continue
            out.append(result)
        return out

    def _check_dim(self, live, vec: np.ndarray) -> None:
        if live.dim != vec.shape[-1]:
            raise EngineError(
                f"the index holds {live.dim}-d vectors but the model makes {vec.shape[-1]}-d ones: "
                "re-run `glimpse index` with the model the index was built with"
            )

    # ------------------------------------------------------------ metadata
    def image(self, image_id: int) -> SearchResult | None:
        """Metadata of an indexed image; None for unknown ids and for failed or pending rows."""
        row = self.store.get_image(image_id)
        if row is None or row.status != "indexed":
            return None
        return to_result(row, None, next(iter(self.store.captions_of(row.id)), None))

    def captions_of(self, image_id: int) -> list[str]:
        return self.store.captions_of(image_id)

    def open_image(self, image_id: int) -> OpenedImage:
        """The file of an indexed image, by id only (never a path from a client), opened for reading.

        The one place that decides whether a file may be served (search.opened.open_row): its row
        is indexed and the file is, right now, the regular file that was indexed. Raises
        ImageUnavailable with a message for the user otherwise.
        """
        return open_row(image_id, self.store.get_image(image_id))

    def health(self) -> dict:
        """Liveness without SQL or model calls: what the live index serves."""
        return health(self.index.get())

    def stats(self, failed_limit: int | None = 50) -> dict:
        """What is indexed, the model, the live index, failures, roots and recent jobs."""
        return stats(self.store, self.index.get(), failed_limit)

    def duplicates(self, threshold: float) -> list[DuplicateGroup]:
        """Near-duplicate groups in the live index (search.duplicates); the last answer is kept
        for its version and threshold, so paging through the groups searches the corpus once."""
        live = self._live()
        key = (live.version, check_threshold(threshold))
        cached = self._duplicates
        if cached is None or cached[0] != key:
            cached = self._duplicates = (key, find_duplicates(self.store, live.images, live.dim, key[1]))
        return cached[1]


MAX_K = 1000


def _check_paging(k: int, page: int) -> tuple[int, int]:
    k, page = int(k), int(page)
    if not 1 <= k <= MAX_K:
        raise EngineError(f"k must be between 1 and {MAX_K}")
    if page < 0:
        raise EngineError("page must be >= 0")
    return k, page
