"""The last stages: rebuild the FAISS index from the stored vectors and publish it atomically;
then the ONNX query bundle the server loads without torch."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np

from indexer.disk import DiskFull, is_disk_full
from indexer.floor_estimate import estimate_floor
from indexer.options import Counts
from search.encoders.model_spec import ModelSpec
from search.encoders.ort_session import runtime_setting
from search.paths import Paths
from search.store.database import Store
from search.store.vectors import CHUNK, Table
from search.vectors.live import IndexDir

if TYPE_CHECKING:
    from search.encoders.protocol import ImageTextEncoder as Encoder
    from search.encoders.torch_clip import Encoder as TorchEncoder

log = logging.getLogger("glimpse.indexer")


def publish(
    paths: Paths,
    store: Store,
    spec: ModelSpec,
    counts: Counts,
    encoder_dim: Callable[[], int],
    force: bool = False,
    encode_texts: Callable[[Sequence[str]], np.ndarray] | None = None,
    rebuild: bool = False,
) -> str | None:
    """Publish a new index version when this run changed what the index holds (or ``force``);
    returns the live version. ``encoder_dim``: the vector size when no stored model row says it;
    ``encode_texts``: the text tower, for the version's relevance floor (indexer.floor_estimate).
    The vectors stream from the store; the live version is updated incrementally unless ``rebuild``."""
    index_dir = IndexDir(paths.index)
    live = index_dir.current_version()
    # Moves and touches keep ids and vectors: the live index is still right; captions that went must go.
    changed = (
        force
        or rebuild
        or any((counts.new, counts.changed, counts.deleted, counts.embedded, counts.captions, counts.captions_removed))
        or counts.failed
    )
    if live and not changed:
        log.info("nothing changed; index version %s stays live", live)
        return live
    row = store.get_model()
    dim = row.dim if row and row.dim else encoder_dim()
    fingerprint = spec.fingerprint()
    try:
        return index_dir.publish_sources(
            StoreSource(store, "images", dim),
            StoreSource(store, "captions", dim),
            {"model": spec.name, "pretrained": spec.pretrained, "fingerprint": fingerprint, "dim": dim, "floor": None},
            rebuild=rebuild,
            floor=(lambda search: estimate_floor(search, fingerprint, encode_texts)) if encode_texts else None,
        )
    except (OSError, RuntimeError) as exc:
        if is_disk_full(exc):
            raise DiskFull(paths.index, "publishing the index") from exc
        raise


@dataclass
class StoreSource:
    """One table's vectors for :meth:`IndexDir.publish_sources`, read from the store in chunks."""

    store: Store
    table: Table
    dim: int
    chunk: int = CHUNK

    def snapshot(self) -> tuple[np.ndarray, int | None]:
        return self.store.vector_ids(self.table)

    def changed_since(self, mark: int) -> np.ndarray:
        return self.store.vector_ids_since(self.table, mark)

    def chunks(self, ids: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.store.iter_vectors(self.table, self.dim, ids, self.chunk)


def write_query_bundle(enc: Encoder | None) -> None:
    """With the model already loaded in torch, write the ONNX query bundle the server
    loads without torch (once per model; see search.encoders.onnx_bundle)."""
    if enc is None or enc.device != "cpu" or runtime_setting() == "torch":
        return
    from search.encoders.onnx_bundle import ensure_bundle

    try:  # built only from a torch encoder; an ONNX one means the bundle exists already
        ensure_bundle(cast("TorchEncoder", enc))
    except Exception as exc:  # noqa: BLE001 - the index is published; the server falls back to torch
        log.warning("no ONNX query bundle (%s: %s); the server will query in torch", exc.__class__.__name__, exc)
