"""Hydration: which candidates are still results, and what a result shows, read once per request.

A candidate from any retriever is *alive* when its row is still indexed and passes the folder and date
filters (rows may have been deleted or moved since the index was published). Checking that reads the
row from the covering index (``Store.result_rows``), which is also everything a result shows; so one
:class:`Rows` per request keeps what it read, and the page is built from it without reading again.
"""

from __future__ import annotations

from collections.abc import Iterable

from search.query.results import SearchResult, to_result
from search.stages import stage
from search.store.database import Store
from search.store.filters import in_dates, under


class Rows:
    """The alive rows among ids asked for, as results without a score; memoised for one request."""

    def __init__(self, store: Store, folder: str | None, date_from: str | None, date_to: str | None):
        self.store = store
        self.folder, self.date_from, self.date_to = folder, date_from, date_to
        self._seen: dict[int, SearchResult | None] = {}
        self._frames: dict[int, tuple[int, float] | None] = {}  # frame id -> (video id, time); None: no frame

    def frames_of(self, ids: Iterable[int]) -> dict[int, tuple[int, float]]:
        """``{frame id: (video id, time)}`` for the ids that are video frames (issue 27), read once."""
        ids = [int(i) for i in ids]
        missing = list(dict.fromkeys(i for i in ids if i not in self._frames))
        if missing:
            found = self.store.frame_videos(missing)
            for i in missing:
                self._frames[i] = found.get(i)
        return {i: f for i in ids if (f := self._frames[i]) is not None}

    @stage("hydrate")
    def alive(self, ids: Iterable[int]) -> dict[int, SearchResult]:
        """The results of the ids whose rows are alive (each id read at most once per request); a video
        frame's id is alive when its video is, and its result is the video's (issue 27)."""
        ids = [int(i) for i in ids]
        missing = list(dict.fromkeys(i for i in ids if i not in self._seen))
        if missing:
            rows = self._read(missing)
            frames = self.frames_of([i for i in missing if i not in rows])
            videos = list(dict.fromkeys(v for v, _ in frames.values() if v not in self._seen))
            if videos:
                self._read(videos)
            for frame_id, (video_id, _) in frames.items():
                self._seen[frame_id] = self._seen.get(video_id)
            for i in missing:
                self._seen.setdefault(i, None)
        out: dict[int, SearchResult] = {}
        for i in ids:
            found = self._seen[i]
            if found is not None:
                out[i] = found
        return out

    def _read(self, ids: list[int]) -> set[int]:
        """Read the rows of ``ids`` into the memo; the ids that have a row (the others may be frames)."""
        rows = self.store.result_rows(ids)
        captions = self.store.primary_captions(list(rows))
        for image_id, row in rows.items():
            self._frames[image_id] = None
            result = None
            if row.status == "indexed" and not (self.folder and not under(row.path, self.folder)):
                result = to_result(row, None, captions.get(image_id))
                if not in_dates((result.date or "")[:10], self.date_from, self.date_to):
                    result = None
            self._seen[image_id] = result
        return set(rows)
