"""Reads of video frames for the query path (issue 27): which video a frame id belongs to, a video's kept
frames with their vectors, and what a video result shows beyond the image columns.

Part of the store (:class:`search.store.database.Store` mixes :class:`FrameReads` in). Frame ids share the
images' id space and their vectors the live ``images`` index, so a vector hit may be a frame; these reads
turn it into its video. Every read is batched by :func:`search.store.chunks.in_chunks` and goes through
an index (the primary key, or ``ix_frames_video_time``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import bindparam, text

from search.store.chunks import in_chunks
from search.store.schema import row_ids, unpack_vectors

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine as SAEngine


@dataclass
class VideoFrames:
    """A video's kept frames in time order: their ids, times (seconds) and unit float32 vectors."""

    ids: np.ndarray
    times: np.ndarray
    vectors: np.ndarray

    def nearest(self, t: float) -> int:
        """The position of the kept frame nearest ``t`` (the earlier on a tie)."""
        return int(np.argmin(np.abs(self.times - t)))


@dataclass(frozen=True)
class VideoInfoRow:
    """What a video result shows beyond an image's columns."""

    duration: float | None
    poster: float | None


class FrameReads:
    """Frame lookups by id and by video."""

    engine: SAEngine  # set by Store

    def frame_videos(self, ids: Iterable[int]) -> dict[int, tuple[int, float]]:
        """``{frame id: (video id, time)}`` for the ids that are frames (others are left out)."""
        q = text("SELECT id, video_id, time FROM frames WHERE id IN :ids").bindparams(bindparam("ids", expanding=True))
        out: dict[int, tuple[int, float]] = {}
        with self.engine.connect() as conn:
            for chunk in in_chunks(row_ids(ids)):
                for frame_id, video_id, t in conn.execute(q, {"ids": list(chunk)}):
                    out[int(frame_id)] = (int(video_id), float(t))
        return out

    def frame_ids(self) -> np.ndarray:
        """Every frame's id, sorted (int64): what a pass over images alone leaves out of the shared index."""
        with self.engine.connect() as conn:
            ids = np.fromiter((r[0] for r in conn.execute(text("SELECT id FROM frames ORDER BY id"))), np.int64)
        return ids

    def frame_times(self, video_id: int) -> list[float]:
        """The times (seconds) of a video's kept frames, in order (``ix_frames_video_time`` alone)."""
        q = text("SELECT time FROM frames WHERE video_id = :v ORDER BY time")
        with self.engine.connect() as conn:
            return [float(t) for (t,) in conn.execute(q, {"v": int(video_id)})]

    def video_frames(self, video_ids: Iterable[int], dim: int) -> dict[int, VideoFrames]:
        """Each video's kept frames (videos without frames, and ids that are no video, are left out)."""
        q = text(
            "SELECT video_id, id, time, vector FROM frames WHERE video_id IN :ids ORDER BY video_id, time, id"
        ).bindparams(bindparam("ids", expanding=True))
        rows: dict[int, list[tuple[int, float, bytes]]] = {}
        with self.engine.connect() as conn:
            for chunk in in_chunks(row_ids(video_ids)):
                for video_id, frame_id, t, blob in conn.execute(q, {"ids": list(chunk)}):
                    rows.setdefault(int(video_id), []).append((int(frame_id), float(t), bytes(blob)))
        return {
            video_id: VideoFrames(
                np.array([f[0] for f in found], np.int64),
                np.array([f[1] for f in found], np.float64),
                unpack_vectors([f[2] for f in found], dim),
            )
            for video_id, found in rows.items()
        }

    def frame_vectors(self, ids: Iterable[int], dim: int) -> dict[int, np.ndarray]:
        """Stored vectors of the ids that are frames (unit float32), as ``Store.vectors_of`` gives images'."""
        q = text("SELECT id, vector FROM frames WHERE id IN :ids").bindparams(bindparam("ids", expanding=True))
        out: dict[int, np.ndarray] = {}
        with self.engine.connect() as conn:
            for chunk in in_chunks(row_ids(ids)):
                found = conn.execute(q, {"ids": list(chunk)}).all()
                if found:
                    vecs = unpack_vectors([bytes(blob) for _, blob in found], dim)
                    out.update((int(frame_id), vecs[j]) for j, (frame_id, _) in enumerate(found))
        return out

    def video_infos(self, ids: Iterable[int]) -> dict[int, VideoInfoRow]:
        """``{id: duration and poster}`` for the ids that are video rows (a page's few).

        The ids are first narrowed to those with frames (``ix_frames_video_time``), so only video rows are
        read from the table; the images' rows stay unread (their vectors make the table large: see
        ``Store.result_rows``). An indexed video always has a frame."""
        q = text(
            "SELECT id, duration, poster FROM images WHERE kind = 'video' AND id IN "
            "(SELECT DISTINCT video_id FROM frames WHERE video_id IN :ids)"
        ).bindparams(bindparam("ids", expanding=True))
        out: dict[int, VideoInfoRow] = {}
        with self.engine.connect() as conn:
            for chunk in in_chunks(row_ids(ids)):
                for video_id, duration, poster in conn.execute(q, {"ids": list(chunk)}):
                    out[int(video_id)] = VideoInfoRow(duration, poster)
        return out
