"""Where Glimpse keeps its state: one data directory, GLIMPSE_HOME."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from search.settings import settings


@dataclass(frozen=True)
class Paths:
    home: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike | None = None) -> Paths:
        home = home or settings()["GLIMPSE_HOME"]
        return cls(Path(os.path.expanduser(str(home))).resolve())

    @property
    def db(self) -> Path:
        return self.home / "glimpse.db"

    @property
    def index(self) -> Path:
        return self.home / "index"

    @property
    def thumbs(self) -> Path:
        return self.home / "thumbs"

    @property
    def lock(self) -> Path:
        return self.home / "glimpse.lock"

    def ensure(self) -> Paths:
        self.home.mkdir(parents=True, exist_ok=True)
        return self


def cache_dir() -> str:
    """Per-user cache for derived model files (ONNX exports): $GLIMPSE_CACHE_DIR, else ~/.cache/glimpse."""
    return os.path.expanduser(settings()["GLIMPSE_CACHE_DIR"])
