"""Near-duplicate groups as a service: the last answer kept per live version and threshold, and the pass
that finds it run in the background, so a page can show how far it has got instead of hanging.

Finding groups searches the whole collection (search.vectors.duplicates: about a minute of CPU at 100k
images, ten at 1M), and the Duplicates page asks again for every page of groups; the answer is kept until
the index version or the threshold changes. One pass runs at a time: requests for the same version and
threshold share it (waitress serves from several threads), and a pass for another one starts after it;
a queued pass that a newer one replaced before it started, and that no caller waits for (the page only
polls), is skipped, so trying thresholds on the page does not queue a pass for each.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from search.vectors.duplicates import Duplicates, check_threshold, find_duplicates

if TYPE_CHECKING:
    from search.store.database import Store
    from search.vectors.live import LoadedIndex

Key = tuple[str, float]


class Superseded(RuntimeError):
    """A queued pass skipped: a newer one replaced it and nobody waited for it."""


@dataclass
class Progress:
    """How far a pass has got: its stage (``search.vectors.duplicates.STAGES``) and how many of how many."""

    stage: str = "starting"
    done: int = 0
    total: int = 0

    @property
    def share(self) -> float:
        return self.done / self.total if self.total else 0.0


@dataclass
class _Pass:
    key: Key
    progress: Progress = field(default_factory=Progress)
    finished: threading.Event = field(default_factory=threading.Event)
    result: Duplicates | None = None
    error: BaseException | None = None
    waiters: int = 0  # callers blocked on the answer (the API, the CLI); the page polls instead

    def outcome(self) -> Duplicates:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class DuplicateGroups:
    def __init__(self, store: Store):
        self.store = store
        self._lock = threading.Lock()
        self._kept: _Pass | None = None  # the last pass started (running, or finished: its answer kept)

    def get(self, live: LoadedIndex, threshold: float) -> Duplicates:
        """The groups, waiting for the pass that finds them (the API's answer)."""
        found = self._pass(live, threshold, waiting=True)
        try:
            found.finished.wait()
        finally:
            with self._lock:
                found.waiters -= 1
        return found.outcome()

    def poll(self, live: LoadedIndex, threshold: float, wait: float) -> Duplicates | Progress:
        """The groups if they are found within ``wait`` seconds, else how far the pass has got (the page's
        answer: it shows that and asks again)."""
        found = self._pass(live, threshold)
        if found.finished.wait(wait):
            return found.outcome()
        return found.progress

    def _pass(self, live: LoadedIndex, threshold: float, waiting: bool = False) -> _Pass:
        key = (live.version, check_threshold(threshold))
        with self._lock:
            before = self._kept
            if before is not None and before.key == key and before.error is None:
                before.waiters += waiting
                return before
            self._kept = found = _Pass(key, waiters=int(waiting))
        threading.Thread(target=self._run, args=(found, live, before), name="duplicates", daemon=True).start()
        return found

    def _run(self, found: _Pass, live: LoadedIndex, before: _Pass | None) -> None:
        if before is not None:
            before.finished.wait()  # one pass at a time: memory and both cores are the pass's
            with self._lock:
                if self._kept is not found and not found.waiters:
                    found.error = Superseded("a pass for another threshold or index version replaced this one")
                    found.finished.set()
                    return

        def progress(stage: str, done: int, total: int) -> None:
            found.progress = Progress(stage, done, total)

        try:
            found.result = find_duplicates(self.store, live, found.key[1], progress=progress)
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the answer
            found.error = exc
        finally:
            found.finished.set()
