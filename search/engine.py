"""Query semantics, shared by the CLI and the web app: one entry, :meth:`Engine.search`.

Text→image, image→image, "more like this", text→caption, raw vectors and weighted
combinations (search.query.kinds says what a query is), with filters, ordering and paging.
Returns plain :class:`SearchResult` objects in a :class:`Page`; callers never see FAISS or SQL.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from search.encoders.model_spec import ModelSpec
from search.errors import EngineError, ImageUnavailable, NotIndexedError
from search.media.decode import Source, load_rgb_bounded
from search.media.opened import OpenedImage, open_row
from search.paths import Paths
from search.query.cache import QueryCache, query_key
from search.query.captions import caption_results
from search.query.floor import count_above, floor_for, is_above, resolve_auto
from search.query.hybrid import add_highlights, hybrid_results
from search.query.kinds import (
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
from search.query.paging import DATE_ORDER_POOL, Ranking, first_fetch
from search.query.results import Page, SearchResult, to_result
from search.settings import settings
from search.stages import stage
from search.status import health, job_dict, stats
from search.store.database import Store
from search.store.filters import in_dates, under
from search.vectors.duplicates import Duplicates, check_threshold, find_duplicates
from search.vectors.filtered import Allowed, Ranked, Subset, allowed_of, ranked, subset_of
from search.vectors.live import IndexDir, LiveIndex

if TYPE_CHECKING:
    from search.encoders.protocol import ImageTextEncoder

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
        conf = settings()
        self.cache = QueryCache(conf["GLIMPSE_QUERY_CACHE_ENTRIES"], int(conf["GLIMPSE_QUERY_CACHE_MB"] * 2**20))
        self._duplicates: tuple[tuple[str, float], Duplicates] | None = None

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
        ``search.encoders.onnx_bundle``), else open_clip in torch.
        """
        if self._encoder is None:
            with self._encoder_lock:
                if self._encoder is None:
                    from search.encoders.protocol import open_encoder

                    self._encoder = open_encoder(self.model_spec(), "query", device=self._device)
        return self._encoder

    def warm(self) -> None:
        """Load model and index now, and run both towers once, so the first query is as fast as the next.

        The model and the index load side by side: both mostly wait on the disk after a reboot (at 10M
        images the ONNX towers took 4 s from a cold page cache and the index 1.5 s, one after the other)."""
        from concurrent.futures import ThreadPoolExecutor

        from PIL import Image

        with ThreadPoolExecutor(1, thread_name_prefix="warm-model") as pool:
            model = pool.submit(lambda: self.encoder)
            live = self._live()
            enc = model.result()
        enc.encode_texts(["warm up"])
        enc.encode_pil([Image.new("RGB", (enc.image_size, enc.image_size), "white")])
        live.prefetch()

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

        One result past the page is checked so ``has_more`` is exact (immich's ``limit(size + 1)``);
        never past MAX_K results, the deepest a client may page. The query's vector, its filter's ids and
        its ranking are kept (search.query.cache), so the next page costs at most one FAISS step.
        """
        page = page or Paging()
        k, number = _check_paging(page.k, page.page)
        floor = floor_for(query, self._live().manifest)
        filters = filters or Filters()
        # auto mode: a keyword match is a real match whatever its cosine, so min_score=auto keeps it
        keep_keywords = filters.min_score_auto and isinstance(query, TextQuery) and query.mode == "auto"
        filters = resolve_auto(filters, None if keep_keywords else floor)
        above: int | None = None
        end = (number + 1) * k
        want = end + 1 if end < MAX_K else end
        if isinstance(query, TextQuery) and query.mode == "captions":
            found = caption_results(self, query.text, want, filters)
            for r in found:
                r.matched = ["caption"]
            shown, has_more = found[number * k : end], len(found) > end
        elif isinstance(query, TextQuery) and query.mode in ("auto", "keywords"):
            found = hybrid_results(self, query, want, filters, DATE_ORDER_POOL if filters.order == "date" else want)
            if floor is not None and filters.order == "relevance":
                # above the floor first (keyword hits, cosines over it), then the weaker ones, each in fused
                # order: one divider between them means what it says; min_score=auto keeps only the first
                above_floor = [r for r in found if is_above(r, floor)]
                found = above_floor if keep_keywords else above_floor + [r for r in found if not is_above(r, floor)]
            shown, has_more = found[number * k : end], len(found) > end
            above = count_above(found, floor, filters.order)
        else:
            _, shown, has_more, ranking = self._vision_page(query, number * k, end, want, filters)
            for r in shown:
                r.matched = ["image"]
            if floor is not None and filters.order == "relevance":
                above = ranking.alive_at_least(floor, end)
        if isinstance(query, TextQuery):
            add_highlights(self.store, shown, query)
        return Page(shown, has_more=has_more, k=k, page=number, floor=floor, above_floor=above)

    def _vision_page(
        self, query: Query, start: int, end: int, want: int, filters: Filters
    ) -> tuple[np.ndarray, list[SearchResult], bool, Ranking]:
        """The query's vector, results ``start:end`` by it, whether more follow, and its kept ranking."""
        live = self._live()
        key = query_key(query)
        vkey = None if key is None else ("vector", key)
        vec = self.cache.get_or_make(live.version, vkey, lambda: self.query_vector(query))
        self._check_dim(live, vec)
        ranking = self._ranking(live, key, vec, want, filters, query)
        results, has_more = ranking.page(
            start, end, want, filters.order, self._refetch(live, vec, filters), self._alive_rows(filters)
        )
        return vec, results, has_more, ranking

    def vision_results(self, query: TextQuery, want: int, filters: Filters) -> tuple[np.ndarray, list[SearchResult]]:
        """The query's vector and its best ``want`` results by vector alone (by relevance), for fusion."""
        vision = TextQuery(query.text, mode="images", allow_files=query.allow_files)
        vec, results, _, _ = self._vision_page(vision, 0, want, want, dataclasses.replace(filters, order="relevance"))
        return vec, results

    def _ranking(self, live, key, vec: np.ndarray, want: int, filters: Filters, query: Query) -> Ranking:
        """The query's kept ranking, or a new one from its first search."""
        rkey = None if key is None else ("ranking", key, _filter_key(filters))
        found = self.cache.get(live.version, rkey) if rkey is not None else None
        if found is not None:
            return found
        exclude = {int(query.image_id)} if isinstance(query, SimilarQuery) else set()
        asked = first_fetch(DATE_ORDER_POOL if filters.order == "date" else want) + len(exclude)
        ranking = Ranking(self._refetch(live, vec, filters)(asked), asked, filters.min_score, exclude)
        if rkey is not None:
            self.cache.put(live.version, rkey, ranking)
        return ranking

    def _refetch(self, live, vec: np.ndarray, filters: Filters):
        def fetch(n: int) -> Ranked:
            allowed = self._filter_ids(live, filters)
            return ranked(live, vec, n, allowed, lambda: self._subset(live, filters, allowed))

        return fetch

    def _filter_ids(self, live, filters: Filters) -> Allowed | None:
        """The ids the folder and date filters keep (None: no such filter), from an indexed query, kept."""
        if not (filters.folder or filters.date_from or filters.date_to):
            return None
        folder = _folder(filters)
        return self.cache.get_or_make(
            live.version,
            ("filter", folder, filters.date_from, filters.date_to),
            lambda: allowed_of(self.store.filtered_ids(folder, filters.date_from, filters.date_to), live.dim),
        )

    def _subset(self, live, filters: Filters, allowed) -> Subset:
        """The stored vectors of a filter's few rows, read once and kept with its ids."""
        key = ("subset", _folder(filters), filters.date_from, filters.date_to)
        return self.cache.get_or_make(live.version, key, lambda: subset_of(self.store, allowed, live.dim))

    def _hydrate(self, pairs: Sequence[tuple[int, float]], filters: Filters) -> list[SearchResult]:
        if filters.min_score is not None:
            pairs = [(i, s) for i, s in pairs if s >= filters.min_score]
        alive = self._alive_rows(filters)([i for i, _ in pairs], [s for _, s in pairs])
        return [alive[i] for i, _ in pairs if i in alive]

    def _alive_rows(self, filters: Filters):
        folder = _folder(filters)

        @stage("hydrate")
        def hydrate(ids: Sequence[int], scores: Sequence[float]) -> dict[int, SearchResult]:
            """Results for the ids whose rows are still indexed and pass the filters (rows may have been
            deleted or moved since the index was published)."""
            rows = self.store.result_rows(ids)
            captions = self.store.primary_captions(list(rows))
            out = {}
            for image_id, score in zip(ids, scores):
                row = rows.get(image_id)
                if row is None or row.status != "indexed" or (folder and not under(row.path, folder)):
                    continue
                result = to_result(row, score, captions.get(image_id))
                if in_dates((result.date or "")[:10], filters.date_from, filters.date_to):
                    out[image_id] = result
            return out

        return hydrate

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

        The one place that decides whether a file may be served (search.media.opened.open_row): its row
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

    def duplicates(self, threshold: float) -> Duplicates:
        """Near-duplicate groups in the live index (search.vectors.duplicates); the last answer is kept
        for its version and threshold, so paging through the groups searches the corpus once."""
        live = self._live()
        key = (live.version, check_threshold(threshold))
        cached = self._duplicates
        if cached is None or cached[0] != key:
            cached = self._duplicates = (key, find_duplicates(self.store, live, key[1]))
        return cached[1]


MAX_K = 1000


def _folder(filters: Filters) -> str | None:
    """The folder filter as an absolute path (the CLI may give ``~`` or a relative one)."""
    return os.path.abspath(os.path.expanduser(filters.folder)) if filters.folder else None


def _filter_key(filters: Filters) -> tuple:
    return (_folder(filters), filters.date_from, filters.date_to, filters.min_score, filters.order)


def _check_paging(k: int, page: int) -> tuple[int, int]:
    k, page = int(k), int(page)
    if not 1 <= k <= MAX_K:
        raise EngineError(f"k must be between 1 and {MAX_K}")
    if page < 0:
        raise EngineError("page must be >= 0")
    return k, page
