"""The relevance floor of an index version: the score a text query reaches on images it does not match.

Estimated at each publish, for this model and this corpus: the probe texts below (nonsense words,
abstractions, office jargon: nothing a photo or an icon shows) are encoded with the model's text
tower and searched for in the images index the publish has just built (no second pass over the
corpus; exact for exact index types); the floor is the ``PERCENTILE``th
percentile of their top-``TOP`` scores. A result under it scores no better than what a query
about nothing gets from the best-fitting unrelated images. Stored in the version's manifest
(``floor``), so the server reads it without torch; the probe vectors are cached per model.

Why top-10 and the 99th percentile: a search shows its first results, so what matters is how
high an unrelated image can rank, not the average unrelated score; 40 probes x 10 scores give
400 values, and their 99th percentile is the level only a handful of the best accidental
matches reach (the maximum would let one odd probe move it).
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

TOP = 10
PERCENTILE = 99.0
PROBES: tuple[str, ...] = (
    "blorf quendix",
    "zarnip wobble tesk",
    "vlim dorrow spunk",
    "qwertyuiop asdfghjkl",
    "xylo frumpet grindle",
    "snerk pallow mivvy",
    "the",
    "and also",
    "however, nevertheless",
    "a list of prime numbers",
    "the concept of justice",
    "irony",
    "a feeling of nostalgia",
    "quarterly tax return deadline",
    "kernel panic stack trace",
    "the meaning of the subjunctive mood",
    "amortization schedule",
    "regulatory compliance audit",
    "an abstract philosophical argument",
    "the square root of minus one",
    "semantic versioning policy",
    "a terms and conditions clause",
    "hypothetical counterfactual reasoning",
    "the passive voice",
    "yesterday's meeting minutes",
    "recursion",
    "an unspecified quantity",
    "epistemology",
    "the second law of thermodynamics",
    "procrastination",
    "a vague sense of obligation",
    "lorem ipsum dolor sit amet",
    "123456789",
    "%%% ### @@@",
    "null undefined NaN",
    "synergy leverage paradigm",
    "the price of tea in 1843",
    "a rumour nobody believes",
    "the difference between affect and effect",
    "an invoice number",
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
    """The floor from each probe's top scores as a search answered them (``ids`` -1: no result)."""
    found = np.asarray(scores, np.float32)[np.asarray(ids) >= 0]
    return round(float(np.percentile(found, PERCENTILE)), 4) if len(found) else None


def estimate_floor(
    search: SearchFn, fingerprint: str, encode_texts: Callable[[Sequence[str]], np.ndarray]
) -> float | None:
    """The floor, searched for in the index just built (``search(queries, k) -> (scores, ids)``): no second
    pass over the corpus. Exact for exact index types; for compressed ones the probes' top-``TOP`` is found
    at the index's tuned recall, which moves a 99th percentile of 400 scores by far less than the floor's
    own spread between corpora. None (logged) when the probes cannot be encoded: a publish never fails for it."""
    try:
        probes = np.ascontiguousarray(probe_vectors(fingerprint, encode_texts), np.float32)
        if len(probes) == 0:
            return None
        return floor_of_top(*search(probes, TOP))
    except Exception as exc:  # noqa: BLE001 - the index is worth publishing without a floor
        log.warning("no relevance floor for this version (%s: %s)", exc.__class__.__name__, exc)
        return None
