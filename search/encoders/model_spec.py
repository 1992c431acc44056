"""Which model made the vectors: parsed, normalised and fingerprinted without torch.

Kept apart from the encoder so that a no-op reindex never imports torch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from search.errors import GlimpseError

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
LOCAL_DIR = "local-dir:"
RANDOM_INIT = "none"  # --pretrained none: random weights (benchmarks only)


class ModelLoadError(GlimpseError):
    """The model or its weights could not be loaded; the message says what to do."""

    http_status = 500  # the server's own model: a fault of the server, not of the request


@dataclass(frozen=True)
class ModelSpec:
    """What the user asked for, normalised so it can be recorded and re-opened."""

    name: str  # zoo name, or "local-dir:/abs/path"
    pretrained: str | None  # zoo tag, checkpoint path, "none", or None

    @classmethod
    def parse(cls, model: str | None, pretrained: str | None = None) -> ModelSpec:
        model = model or DEFAULT_MODEL
        if model.startswith(LOCAL_DIR):
            path = Path(os.path.expanduser(model[len(LOCAL_DIR) :])).resolve()
            return cls(f"{LOCAL_DIR}{path}", None)
        if os.path.isdir(model) and os.path.isfile(os.path.join(model, "open_clip_config.json")):
            return cls(f"{LOCAL_DIR}{Path(model).resolve()}", None)
        if pretrained is None and model == DEFAULT_MODEL:
            pretrained = DEFAULT_PRETRAINED
        if pretrained and pretrained != RANDOM_INIT and os.path.isfile(os.path.expanduser(pretrained)):
            pretrained = str(Path(os.path.expanduser(pretrained)).resolve())
        return cls(model, pretrained or None)

    def fingerprint(self) -> str:
        """Identity of the weights: changes whenever the vectors would.

        Hashed once per spec: a checkpoint can be gigabytes, and one index run
        asks several times (model check, encoder load, publish).
        """
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            cached = self._hash_weights()
            object.__setattr__(self, "_fingerprint", cached)  # frozen dataclass: not a field, not compared
        return cached

    def _hash_weights(self) -> str:
        if self.name.startswith(LOCAL_DIR):
            folder = Path(self.name[len(LOCAL_DIR) :])
            if not (folder / "open_clip_config.json").is_file():
                raise ModelLoadError(f"model folder {folder} not found, or it has no open_clip_config.json")
            files = sorted(
                p
                for p in folder.iterdir()
                if p.is_file() and p.suffix in (".json", ".safetensors", ".bin", ".pt", ".pth")
            )
            return "sha256:" + _sha256_files(files)
        if self.pretrained and os.path.isfile(self.pretrained):
            return "sha256:" + _sha256_files([Path(self.pretrained)])
        if self.pretrained == RANDOM_INIT or not self.pretrained:
            return f"{self.name}/random-init-seed0"
        return f"{self.name}/{self.pretrained}"

    def describe(self) -> str:
        return self.name + (f" ({self.pretrained})" if self.pretrained else "")


def _sha256_files(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:32]
