"""Which model embeds this run, checked against the one that made the stored vectors; its
encoder, opened only when something needs embedding; the model row, written once."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from indexer.options import Options
from indexer.runner import encode_streams
from search.encoders.model_spec import ModelSpec
from search.encoders.ort_session import cpu_threads
from search.errors import GlimpseError
from search.store.database import Store

if TYPE_CHECKING:
    from search.encoders.protocol import ImageTextEncoder as Encoder

log = logging.getLogger("glimpse.indexer")


class ModelMismatch(GlimpseError):
    """Indexing with a different model than the stored vectors were made with."""


class ModelStage:
    """The run's model and its encoder (given, or opened on first use)."""

    def __init__(self, store: Store, opts: Options, encoder: Encoder | None = None):
        self.store = store
        self.opts = opts
        self._encoder = encoder
        self._row_checked = False

    @property
    def loaded(self) -> Encoder | None:
        """The encoder if this run opened (or was given) one, else None."""
        return self._encoder

    def resolve(self) -> ModelSpec:
        """The requested model, checked against the one that made the stored vectors. A model
        change with ``reembed`` opens the new encoder, then forgets every vector and records the
        new model in one transaction."""
        row = self.store.get_model()
        if self.opts.model is None and self.opts.pretrained is None and row is not None:
            return ModelSpec(row.name, row.pretrained)
        spec = ModelSpec.parse(self.opts.model, self.opts.pretrained)
        if row is not None and row.fingerprint != spec.fingerprint():
            if not self.opts.reembed:
                raise ModelMismatch(
                    f"the index was built with {row.name} ({row.pretrained or row.fingerprint}) but {spec.describe()} "
                    "was requested; vectors from different models cannot be mixed. Re-run with --reembed to "
                    "re-embed every image with the new model, or leave out --model to keep the current one."
                )
            log.warning("model changed to %s: every image and caption will be re-embedded", spec.describe())
            enc = self._open(spec)
            self.store.switch_model(spec.name, spec.pretrained, spec.fingerprint(), enc.dim)
            self._row_checked = True
        return spec

    def encoder(self, spec: ModelSpec) -> Encoder:
        """The encoder for ``spec``; the first call records the model row if it does not say this
        model and this dimension yet."""
        enc = self._open(spec)
        if not self._row_checked:
            row = self.store.get_model()
            if row is None or row.dim != enc.dim or row.fingerprint != spec.fingerprint():
                self.store.set_model(spec.name, spec.pretrained, spec.fingerprint(), enc.dim)
            self._row_checked = True
        return enc

    def _open(self, spec: ModelSpec) -> Encoder:
        if self._encoder is None:
            from search.encoders.protocol import open_encoder  # only when something needs embedding

            streams = encode_streams(self.opts.device)
            self._encoder = open_encoder(
                spec,
                "index",
                device=self.opts.device,
                quantize=self.opts.quantize,
                ort_threads=max(1, cpu_threads() // streams),
            )
        return self._encoder
