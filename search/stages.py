"""Timing hook for the stages of a query (encode, faiss, hydrate), free of any dependency.

The engine marks its stages with ``stage("encode")`` (a context manager or a
decorator); whoever wants the timings (the web app's /metrics) installs an
observer with ``set_observer`` for the request it serves and resets it after.
The observer lives in a context variable rather than on the engine, so several
apps sharing one engine each see only their own requests, and nothing is kept
once a request ends. Without an observer a stage costs one lookup.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

Observer = Callable[[str, float], None]

_observer: ContextVar[Observer | None] = ContextVar("glimpse_stage_observer", default=None)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Report how long the enclosed block took as ``observer(name, seconds)``, if one is set."""
    observer = _observer.get()
    if observer is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        observer(name, time.perf_counter() - start)


def set_observer(observer: Observer | None) -> Token:
    """Send stage timings of the current context to ``observer``; pass the token to ``reset_observer``."""
    return _observer.set(observer)


def reset_observer(token: Token) -> None:
    _observer.reset(token)
