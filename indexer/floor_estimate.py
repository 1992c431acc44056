"""The relevance floor of an index version: the score a text query reaches on images it does not match.

Estimated at each publish, for this model and this corpus: the probe texts below (made-up words, words
that carry no picture, abstractions: nothing a photo, a drawing or a screenshot shows) are encoded with the
model's text tower and searched for in the images index the publish has just built (no second pass over
the corpus; exact for exact index types); the floor is the best score any of them reaches. A result under
it scores no better than what a query about nothing gets from the best-fitting unrelated image. Stored in
the version's manifest (``floor``), so the server reads it without torch; the probe vectors are cached per
model.

Why the best score and not a high percentile: the promise of ``min_score=auto`` is counted in queries (a query
about something the collection lacks should return nothing), and real words score higher on unrelated images
than made-up ones, so a floor that some probes' results pass lets through more real absent words than that.
Measured with the shipped model (``python -m bench.floor_rules``, BENCHMARKS.md 2026-12-07): the 99th
percentile of the probes' top-10 let 5-16% of absent words return something; the best probe score, 0.4-6%,
at the cost of about 40% of the true matches that were above the old floor. The probes hold nothing a
picture can show (no documents, code, numbers or symbols, which screenshots and receipts show and a model
that reads text would match), so no probe that really matches something can set the floor.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence

import numpy as np

from search.paths import cache_dir
from search.vectors.versions import SearchFn

log = logging.getLogger("glimpse.indexer")

TOP = 1  # the floor is the best probe score: each probe's best match is all it needs
PROBES: tuple[str, ...] = (
    # made-up words: no picture shows them, and no real word is near them
    "blorf quendix",
    "zarnip wobble tesk",
    "vlim dorrow spunk",
    "xylo frumpet grindle",
    "snerk pallow mivvy",
    "plimbo stradge",
    "quabbit nerl",
    "trazzle monquip",
    "ghert yuvo plenn",
    "oskle dravent",
    "pribbet ulm snove",
    "kwindle jaspo",
    # words that carry no picture
    "the",
    "and also",
    "however, nevertheless",
    "whereas",
    "notwithstanding",
    "albeit",
    "thus",
    "insofar as",
    "for what it's worth",
    "on second thought",
    "generally speaking",
    "in the meantime",
    "the aforementioned",
    # abstractions: nothing a photo, a drawing or a screenshot shows (not documents, code, numbers or
    # symbols: a screenshot or a receipt shows those, and with a model that reads text they would match)
    "the concept of justice",
    "irony",
    "a feeling of nostalgia",
    "the meaning of the subjunctive mood",
    "an abstract philosophical argument",
    "hypothetical counterfactual reasoning",
    "an unspecified quantity",
    "epistemology",
    "procrastination",
    "a vague sense of obligation",
    "synergy leverage paradigm",
    "a rumour nobody believes",
    "the difference between affect and effect",
    "the passive voice",
    "the benefit of the doubt",
    "a change of heart",
    "an ulterior motive",
    "plausible deniability",
    "the status quo",
    "moral hazard",
    "a lack of consensus",
    "a matter of opinion",
    "wishful thinking",
    "a hunch",
    "the general idea",
    "a foregone conclusion",
    "something or other",
    "the gist of it",
)


def probe_vectors(fingerprint: str, encode_texts: Callable[[Sequence[str]], np.ndarray]) -> np.ndarray:
    """The probes' unit text vectors for this model: encoded once, then read from the cache
    (a publish that only deletes or moves files then needs no model at all)."""
    key = hashlib.sha256("\n".join((fingerprint, *PROBES)).encode()).hexdigest()[:24]
    path = os.path.join(cache_dir(), "floor-probes", f"{key}.npy")
    try:
        return np.load(path)
    except (OSError, ValueError):
        pass
    vecs = np.asarray(encode_texts(list(PROBES)), np.float32)
    vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npy"
        np.save(tmp, vecs)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache only costs the next publish an encode
        log.debug("probe vectors not cached (%s)", exc)
    return vecs


def floor_of_top(scores: np.ndarray, ids: np.ndarray) -> float | None:
    """The floor from each probe's top scores as a search answered them (``ids`` -1: no result): the best."""
    found = np.asarray(scores, np.float32)[np.asarray(ids) >= 0]
    return round(float(found.max()), 4) if len(found) else None


def estimate_floor(
    search: SearchFn, fingerprint: str, encode_texts: Callable[[Sequence[str]], np.ndarray]
) -> float | None:
    """The floor, searched for in the index just built (``search(queries, k) -> (scores, ids)``): no second
    pass over the corpus. Exact for exact index types; compressed ones re-rank their candidates exactly, so
    the best probe score is missed only where the index's tuned recall misses that image. None (logged) when
    the probes cannot be encoded: a publish never fails for it."""
    try:
        probes = np.ascontiguousarray(probe_vectors(fingerprint, encode_texts), np.float32)
        if len(probes) == 0:
            return None
        return floor_of_top(*search(probes, TOP))
    except Exception as exc:  # noqa: BLE001 - the index is worth publishing without a floor
        log.warning("no relevance floor for this version (%s: %s)", exc.__class__.__name__, exc)
        return None
