"""Videos as one result each (issue 27): grouping after fusion, and each video's moments at hydration.

A video's frames share the images' index, so a vector ranking may hold several frames of one video, and a
word source may hold the video's own row. :func:`grouped` keeps the first ranked entry of each video where
it stands and drops the later ones, so a video ranks by its best frame. Its prefix stays final: a group's
place is its best member's, and nothing unseen can precede a final entry, so nothing unseen can precede
the group either. Pages then slice groups, and continue each other exactly.

The moment a video result shows is not taken from the ranking but from the video's own frames, scored
exactly against the query vector (:func:`moments`): the same answer however deep fusion fetched.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from search.query.fusion import Fused, Ranked
from search.query.results import SearchResult
from search.query.rows import Rows
from search.store.frames import VideoFrames

# Other moments a video result lists, and how far apart (seconds) any two shown times must be.
MAX_MOMENTS = 5
MIN_GAP_S = 2.0


def grouped(fused: Fused, rows: Rows) -> Fused:
    """The ranking with one entry per video (its first), under the video's id; images are unchanged.

    ``final`` counts the groups whose first entry lies in the final prefix."""
    frames = rows.frames_of(r.id for r in fused.ranked)
    if not frames:
        return fused
    kept: dict[int, Ranked] = {}
    out: list[Ranked] = []
    final = 0
    for n, r in enumerate(fused.ranked):
        group = frames[r.id][0] if r.id in frames else r.id
        first = kept.get(group)
        if first is not None:  # a later frame of a video already placed: what it matched by still shows
            first.matched.extend(m for m in r.matched if m not in first.matched)
            continue
        entry = dataclasses.replace(r, id=group, matched=list(r.matched))
        kept[group] = entry
        out.append(entry)
        if n < fused.final:
            final += 1
    return Fused(out, len(out) if fused.complete else final, fused.complete)


def moments(
    frames: VideoFrames, query: np.ndarray, min_score: float | None = None
) -> tuple[float, list[dict[str, float]]]:
    """The best frame's time and up to MAX_MOMENTS other times, best first, each at least MIN_GAP_S from
    every time already taken (and at least ``min_score``, when given)."""
    scores = frames.vectors @ np.asarray(query, np.float32).reshape(-1)
    order = np.lexsort((frames.times, -scores))  # best first, the earlier frame on a tie
    best = int(order[0])
    taken = [float(frames.times[best])]
    out: list[dict[str, float]] = []
    for j in order[1:]:
        if len(out) >= MAX_MOMENTS:
            break
        s, t = float(scores[j]), float(frames.times[j])
        if min_score is not None and s < min_score:
            break
        if all(abs(t - u) >= MIN_GAP_S for u in taken):
            taken.append(t)
            out.append({"time": t, "score": s})
    return taken[0], out


def best_cosines(frames: dict[int, VideoFrames], query: np.ndarray) -> dict[int, float]:
    """Each video's best frame cosine with ``query`` (how a video blends in auto mode)."""
    vec = np.asarray(query, np.float32).reshape(-1)
    return {video_id: float((f.vectors @ vec).max()) for video_id, f in frames.items() if len(f.ids)}


def with_videos(rows: Rows, found: dict[int, SearchResult]) -> dict[int, SearchResult]:
    """Results by id as a lookup by id shows them: a video's id says it is one (time: its poster); a frame's
    id answers with its video, at the frame's time."""
    frames = rows.frames_of(found)
    infos = rows.store.video_infos({frames[i][0] if i in frames else i for i in found})
    out = {}
    for i, result in found.items():
        video_id, t = frames[i] if i in frames else (i, None)
        info = infos.get(video_id)
        if info is not None:
            result = dataclasses.replace(result, kind="video", duration=info.duration)
            result.time = t if t is not None else info.poster
        out[i] = result
    return out
