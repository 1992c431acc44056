"""The engine: one object per process that the CLI and the web app call, and nothing else does.

A thin facade. :meth:`Engine.search` plans the request once (search.query.plan) and runs the one query
path (search.query.pipeline: retrievers, fusion, hydration); files, stats and near-duplicates are
services of their own (search.media.opened, search.status, search.vectors.duplicate_groups). Returns
plain :class:`SearchResult` objects in a :class:`Page`; callers never see FAISS or SQL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from search.errors import EngineError, ImageUnavailable, NotIndexedError
from search.media.opened import OpenedImage, open_row
from search.paths import Paths
from search.query.cache import QueryCache
from search.query.groups import with_videos
from search.query.image_text import TextOnImage, text_on_image
from search.query.kinds import MAX_K, Filters, Paging, Query, TextQuery
from search.query.pipeline import search as run_search
from search.query.plan import plan_query
from search.query.results import Page, SearchResult, to_result
from search.query.retrievers import Sources
from search.query.rows import Rows
from search.query.vectors import QueryVectors
from search.settings import settings as process_settings
from search.status import health, job_dict, stats
from search.store.database import Store
from search.vectors.duplicate_groups import DuplicateGroups, Progress
from search.vectors.duplicates import Duplicates, ProgressFn, check_threshold, find_duplicates
from search.vectors.live import IndexDir, LiveIndex, LoadedIndex

if TYPE_CHECKING:
    from search.encoders.model_spec import ModelSpec
    from search.encoders.protocol import ImageTextEncoder

log = logging.getLogger(__name__)

__all__ = [
    "MAX_K",
    "Engine",
    "EngineError",
    "Filters",
    "ImageUnavailable",
    "NotIndexedError",
    "OpenedImage",
    "Page",
    "SearchResult",
    "job_dict",
]


class Engine:
    """One per process: the store, the live index, the (lazily) loaded encoder and the query cache.

    ``settings``: this engine's settings (search.settings; default: the process's, read now)."""

    def __init__(
        self,
        paths: Paths,
        encoder: ImageTextEncoder | None = None,
        device: str | None = None,
        index_check_every: float = 1.0,
        settings: Mapping[str, Any] | None = None,
    ):
        self.paths = paths
        self.settings = settings if settings is not None else process_settings()
        self.store = Store(paths.db)
        self.index = LiveIndex(IndexDir(paths.index), check_every=index_check_every, conf=self.settings)
        self.vectors = QueryVectors(self.store, self.model_spec, encoder, device, conf=self.settings)
        self.cache = QueryCache(
            self.settings["GLIMPSE_QUERY_CACHE_ENTRIES"], int(self.settings["GLIMPSE_QUERY_CACHE_MB"] * 2**20)
        )
        self.duplicate_groups = DuplicateGroups(self.store)

    @classmethod
    def open(cls, home: str | None = None, **kw) -> Engine:
        return cls(Paths.resolve(home), **kw)

    def close(self) -> None:
        self.store.close()

    # ------------------------------------------------------------ model
    def model_spec(self) -> ModelSpec:
        from search.encoders.model_spec import ModelSpec

        row = self.store.get_model()
        if row is None:
            raise NotIndexedError("nothing indexed yet: run `glimpse index PATH` first")
        return ModelSpec(row.name, row.pretrained)

    @property
    def encoder(self) -> ImageTextEncoder:
        """The model the vectors were made with; loaded once, kept for every query."""
        return self.vectors.encoder

    def warm(self) -> None:
        """Load model and index now, and run both towers once, so the first query is as fast as the next.

        The model and the index load side by side: both mostly wait on the disk after a reboot (at 10M
        images the ONNX towers took 4 s from a cold page cache and the index 1.5 s, one after the other)."""
        from concurrent.futures import ThreadPoolExecutor

        from PIL import Image

        with ThreadPoolExecutor(1, thread_name_prefix="warm-model") as pool:
            model = pool.submit(lambda: self.encoder)
            live = self.live()
            enc = model.result()
        enc.encode_texts(["warm up"])
        enc.encode_pil([Image.new("RGB", (enc.image_size, enc.image_size), "white")])
        live.prefetch()

    def live(self) -> LoadedIndex:
        """The live index version now (one snapshot per request: a hot swap changes the next one)."""
        live = self.index.get()
        if live is None:
            raise NotIndexedError("no published index yet: run `glimpse index PATH` first")
        return live

    # ------------------------------------------------------------ search
    def search(self, query: Query, filters: Filters | None = None, page: Paging | None = None) -> Page:
        """The one search entry: any query kind, filters, one page and whether another follows.

        One result past the page is checked so ``has_more`` is exact; never past MAX_K results, the
        deepest a client may page. The query's vector, its filter's ids and its rankings are kept
        (search.query.cache), so the next page redoes none of that work."""
        plan = plan_query(query, filters, page, self.live())
        rows = Rows(self.store, plan.folder, plan.filters.date_from, plan.filters.date_to)
        return run_search(plan, Sources(self.store, self.vectors, self.cache, rows))

    def query_vector(self, query: Query) -> np.ndarray:
        """The vector a query is searched with (captions mode: the one text vector of the whole text)."""
        from search.query.kinds import parse_query

        terms: list = []
        if isinstance(query, TextQuery) and query.mode != "captions":
            try:
                terms = parse_query(query.text or "", allow_files=query.allow_files)
            except ValueError as exc:
                raise EngineError(str(exc)) from exc
        return self.vectors.of(query, terms)

    def vectors_of(self, image_ids: Iterable[int]) -> dict[int, np.ndarray]:
        """Stored vectors by image id (for deduplication); ids without one are left out."""
        return self.store.vectors_of(image_ids, self.encoder.dim)

    # ------------------------------------------------------------ metadata and files
    def image(self, image_id: int) -> SearchResult | None:
        """Metadata of an indexed image; None for unknown ids and for failed or pending rows."""
        row = self.store.get_image(image_id)
        if row is None or row.status != "indexed":
            return None
        return to_result(row, None, next(iter(self.store.captions_of(row.id)), None))

    def images(self, image_ids: Iterable[int]) -> dict[int, SearchResult]:
        """Metadata of many images at once, as :meth:`image` gives it; ids that name no indexed image are
        left out (one batched read however many ids: clip-retrieval's /metadata asks up to MAX_K)."""
        rows = Rows(self.store, None, None, None)
        return with_videos(rows, rows.alive(image_ids))

    def captions_of(self, image_id: int) -> list[str]:
        return self.store.captions_of(image_id)

    def video_scenes(self, image_id: int) -> list[float]:
        """A video's scenes: the times of the frames its index kept (its cuts, and at least one every
        ``GLIMPSE_VIDEO_FLOOR_S``), in order; empty for an image."""
        return self.store.frame_times(image_id)

    def image_text(self, image_id: int, query_text: str | None = None) -> TextOnImage | None:
        """The text read in an image, the query's words marked and the boxes of their lines (every line's
        without a query); None when no text was read in it. A query the parser refuses is an EngineError."""
        try:
            return text_on_image(self.store, image_id, query_text)
        except ValueError as exc:
            raise EngineError(str(exc)) from exc

    def open_image(self, image_id: int) -> OpenedImage:
        """The file of an indexed image, by id only (never a path from a client), opened for reading.

        The one place that decides whether a file may be served (search.media.opened.open_row): its row
        is indexed and the file is, right now, the regular file that was indexed. Raises
        ImageUnavailable with a message for the user otherwise.
        """
        return open_row(image_id, self.store.get_image(image_id))

    # ------------------------------------------------------------ services
    def health(self) -> dict:
        """Liveness without SQL or model calls: what the live index serves."""
        return health(self.index.get())

    def stats(self, failed_limit: int | None = 50) -> dict:
        """What is indexed, the model, the live index, failures, roots and recent jobs."""
        return stats(self.store, self.index.get(), failed_limit)

    def duplicates(self, threshold: float, progress: ProgressFn | None = None) -> Duplicates:
        """Near-duplicate groups in the live index (search.vectors.duplicates), kept for its version and
        threshold so paging through the groups searches the corpus once. ``progress``: a one-off pass told
        how far it has got (the CLI's bars), not kept."""
        if progress is not None:
            return find_duplicates(self.store, self.live(), check_threshold(threshold), progress=progress)
        return self.duplicate_groups.get(self.live(), threshold)

    def duplicates_or_progress(self, threshold: float, wait: float) -> Duplicates | Progress:
        """The groups if found within ``wait`` seconds, else how far the pass finding them has got (it goes
        on in the background; asking again shows more)."""
        return self.duplicate_groups.poll(self.live(), threshold, wait)
