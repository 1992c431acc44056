"""Query vectors: the model loaded once per engine, and the vector of each kind of query.

The encoder is the model the vectors were made with (the store's model row), opened on first use: on CPU
the ONNX Runtime query bundle (no torch in the process, search.encoders.onnx_bundle), else open_clip in
torch. A combined text query is the weighted sum of its parsed terms' vectors (negatives subtract); the
terms come parsed from the plan, never parsed again here.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from search.errors import EngineError
from search.media.decode import Source, load_rgb_bounded
from search.query.args import BadSearchValue
from search.query.kinds import FileQuery, ImageQuery, Query, SimilarQuery, Term, TextQuery, VectorQuery
from search.stages import stage

if TYPE_CHECKING:
    from search.encoders.model_spec import ModelSpec
    from search.encoders.protocol import ImageTextEncoder
    from search.store.database import Store


class QueryVectors:
    """The engine's encoder (loaded once, under a lock) and the vectors queries are searched with."""

    def __init__(
        self,
        store: Store,
        model_spec: Callable[[], ModelSpec],
        encoder: ImageTextEncoder | None = None,
        device: str | None = None,
        conf: Mapping[str, Any] | None = None,
    ):
        self.store = store
        self.conf = conf
        self._model_spec = model_spec
        self._encoder = encoder
        self._device = device
        self._lock = threading.Lock()

    @property
    def encoder(self) -> ImageTextEncoder:
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    from search.encoders.protocol import open_encoder

                    self._encoder = open_encoder(self._model_spec(), "query", device=self._device)
        return self._encoder

    @stage("encode")
    def text(self, text: str) -> np.ndarray:
        if not text or not text.strip():
            raise EngineError("empty query")
        return self.encoder.encode_texts([text])[0]

    @stage("encode")
    def image(self, source: Source) -> np.ndarray:
        # Same draft-mode decode as the indexer, so a file finds its own vector; under the decode
        # budget, since a server runs many of these at once.
        img = load_rgb_bounded(source, self.encoder.image_size, self.conf)
        return self.encoder.encode_pil([img])[0]

    def combined(self, terms: Sequence[Term]) -> np.ndarray:
        """Weighted text (and, for the CLI, image-file) terms; negatives subtract."""
        total = np.zeros(self.encoder.dim, np.float32)
        for term in terms:
            vec = self.image(os.path.expanduser(term.text)) if term.is_image else self.text(term.text)
            total += term.weight * vec
        norm = float(np.linalg.norm(total))
        if norm < 1e-9:
            raise EngineError("the query terms cancel out")
        return total / norm

    def of(self, query: Query, terms: Sequence[Term] = ()) -> np.ndarray:
        """The vector ``query`` is searched with (captions mode: the one vector of the whole text)."""
        if isinstance(query, TextQuery):
            return self.text(query.text) if query.mode == "captions" else self.combined(terms)
        if isinstance(query, ImageQuery):
            return self.image(query.data)
        if isinstance(query, FileQuery):
            return self.image(query.path)
        if isinstance(query, SimilarQuery):
            return self.similar(query)
        if isinstance(query, VectorQuery):
            return np.asarray(query.vector, np.float32).reshape(-1)
        raise TypeError(f"not a query: {query!r}")

    def similar(self, query: SimilarQuery) -> np.ndarray:
        """An image's stored vector; a video's kept frame nearest ``t`` (its poster's time without one)."""
        dim = self.encoder.dim
        vec = self.store.vectors_of([query.image_id], dim).get(int(query.image_id))
        if vec is not None:
            if query.t is not None:
                raise BadSearchValue(f"t applies to a video only: {query.image_id} is an image")
            return vec
        frames = self.store.video_frames([query.image_id], dim).get(int(query.image_id))
        if frames is None:
            raise EngineError(f"image {query.image_id} is not indexed")
        t = query.t
        if t is None:
            info = self.store.video_infos([query.image_id]).get(int(query.image_id))
            t = info.poster if info is not None and info.poster is not None else 0.0
        return frames.vectors[frames.nearest(t)]
