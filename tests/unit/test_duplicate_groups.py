"""The near-duplicates service: one search per live version and threshold, also when server threads ask
at once (waitress serves the Duplicates page's requests from several threads)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import search.vectors.duplicate_groups as groups_module
from search.vectors.duplicate_groups import DuplicateGroups


def test_concurrent_requests_search_once_and_a_new_version_searches_again(monkeypatch):
    calls: list[tuple[str, float]] = []
    inside, release, second = threading.Event(), threading.Event(), threading.Event()

    def find(store, live, threshold, progress=None):
        calls.append((live.version, threshold))
        if len(calls) == 1:
            inside.set()
            release.wait(30)
        else:
            second.set()
        return ("groups", live.version, threshold)

    monkeypatch.setattr(groups_module, "find_duplicates", find)
    service = DuplicateGroups(store=None)  # type: ignore[arg-type]
    v1 = SimpleNamespace(version="v1")
    answers: list = []
    first = threading.Thread(target=lambda: answers.append(service.get(v1, 0.9)))
    first.start()
    assert inside.wait(30)
    other = threading.Thread(target=lambda: answers.append(service.get(v1, 0.9)))
    other.start()
    # without the lock the second request would search too while the first is still searching
    second.wait(2)
    release.set()
    first.join(30)
    other.join(30)
    assert calls == [("v1", 0.9)]
    assert answers == [("groups", "v1", 0.9)] * 2
    assert service.get(SimpleNamespace(version="v2"), 0.9) == ("groups", "v2", 0.9)
    assert service.get(SimpleNamespace(version="v2"), 0.95) == ("groups", "v2", 0.95)
    assert len(calls) == 3


def test_poll_shows_progress_until_the_answer_and_a_failed_pass_is_tried_again(monkeypatch):
    release = threading.Event()
    runs: list[float] = []

    def find(store, live, threshold, progress=None):
        runs.append(threshold)
        progress("comparing pictures", 3, 10)
        release.wait(30)
        if threshold == 0.5:
            raise RuntimeError("disk gone")
        return ("groups", threshold)

    monkeypatch.setattr(groups_module, "find_duplicates", find)
    service = DuplicateGroups(store=None)  # type: ignore[arg-type]
    v1 = SimpleNamespace(version="v1")
    shown = service.poll(v1, 0.9, wait=0.05)
    assert isinstance(shown, groups_module.Progress)
    assert (shown.stage, shown.done, shown.total, shown.share) == ("comparing pictures", 3, 10, 0.3)
    release.set()
    assert service.poll(v1, 0.9, wait=5) == ("groups", 0.9)
    assert service.get(v1, 0.9) == ("groups", 0.9) and runs == [0.9]  # kept: not searched again
    for _ in range(2):  # a failed pass is the caller's error, and the next request tries again
        try:
            service.get(v1, 0.5)
        except RuntimeError as exc:
            assert str(exc) == "disk gone"
        else:
            raise AssertionError("the error was not raised")
    assert runs == [0.9, 0.5, 0.5]


def test_thresholds_tried_on_the_page_do_not_queue_a_pass_each(monkeypatch):
    """While a pass runs, the page asks for 0.8, then 0.7: the 0.8 pass, replaced before it started and
    waited for by nobody, is skipped; one an API caller waits for is not."""
    release = threading.Event()
    runs: list[float] = []

    def find(store, live, threshold, progress=None):
        runs.append(threshold)
        release.wait(30)
        return ("groups", threshold)

    monkeypatch.setattr(groups_module, "find_duplicates", find)
    service = DuplicateGroups(store=None)  # type: ignore[arg-type]
    v1 = SimpleNamespace(version="v1")
    assert isinstance(service.poll(v1, 0.9, wait=0.05), groups_module.Progress)  # running
    assert isinstance(service.poll(v1, 0.8, wait=0.05), groups_module.Progress)  # queued
    assert isinstance(service.poll(v1, 0.7, wait=0.05), groups_module.Progress)  # queued, replaces 0.8
    waited: list = []
    api = threading.Thread(target=lambda: waited.append(service.get(v1, 0.6)))  # an API caller: must run
    api.start()
    release.set()
    api.join(30)
    assert waited == [("groups", 0.6)]
    # 0.8 never ran (0.7 runs only if the API's request came after its turn, which the threads decide)
    assert runs[0] == 0.9 and runs[-1] == 0.6 and 0.8 not in runs
    assert service.poll(v1, 0.6, wait=5) == ("groups", 0.6)
