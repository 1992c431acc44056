"""An indexed image's file, opened for serving: the row must be indexed and the file still the one
that was indexed (search.media.files.open_verified); otherwise :class:`ImageUnavailable` says why."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import BinaryIO

from search.errors import ImageUnavailable
from search.media.files import NotTheIndexedFile, download_name, open_verified, shown
from search.store.schema import ImageRow

log = logging.getLogger("search.engine")


@dataclass
class OpenedImage:
    """An indexed image's file, opened and verified by :meth:`Engine.open_image`; close it (or use ``with``)."""

    id: int
    file: BinaryIO
    name: str  # the file name as shown: valid UTF-8, no control characters (a download name)
    size: int
    mtime: float
    mtime_ns: int

    @property
    def etag(self) -> str:
        return f"{self.id}-{self.mtime_ns:x}-{self.size:x}"

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> OpenedImage:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_row(image_id: int, row: ImageRow | None) -> OpenedImage:
    """Open image ``image_id`` (its row, or None when there is none) after the serving checks."""
    if row is None or row.status != "indexed":
        raise ImageUnavailable(f"no image with id {image_id}")
    try:
        f, st = open_verified(row.real_path or row.path, row.size, row.mtime)
    except NotTheIndexedFile as exc:
        log.warning("not serving image %d (%s): %s", image_id, shown(row.real_path or row.path), exc)
        raise ImageUnavailable(
            f"image {image_id} is no longer the file that was indexed ({exc}); `glimpse reindex` picks up the change"
        ) from None
    except (FileNotFoundError, NotADirectoryError):
        raise ImageUnavailable(
            f"image {image_id} is no longer on disk (moved, deleted or its drive unmounted)"
        ) from None
    except OSError as exc:
        raise ImageUnavailable(f"image {image_id} cannot be read: {exc.strerror or exc}") from None
    return OpenedImage(image_id, f, download_name(row.path), st.st_size, st.st_mtime, st.st_mtime_ns)
