"""Progress bars on a terminal, plain log lines otherwise (cron mail, journald).

Off a terminal a long step still says how far it got, one line every
``GLIMPSE_PROGRESS_EVERY`` seconds (default 30), so a nightly job that runs
for an hour is not silent and a killed one shows where it stopped.
"""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

from search.settings import settings

log = logging.getLogger("glimpse.progress")


def on_terminal() -> bool:
    return sys.stderr.isatty()


class LogProgress:
    """The tqdm subset the indexer uses (``update``, ``close``), as periodic log lines."""

    def __init__(self, total: int | None, desc: str, unit: str, every: float):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.n = self._logged = 0
        self._start = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self._log(now)

    def close(self) -> None:
        if self.n and self.n != self._logged and time.monotonic() - self._start >= self.every:
            self._log(time.monotonic())

    def _log(self, now: float) -> None:
        self._logged = self.n
        rate = self.n / max(now - self._start, 1e-9)
        of = f"/{self.total}" if self.total is not None else ""
        unit = {"img": "images", "file": "files", "cap": "captions"}.get(self.unit, self.unit)
        log.info("%s: %d%s %s (%.1f/s)", self.desc, self.n, of, unit, rate)


def bar(total: int | None, desc: str, unit: str = "img") -> tqdm | LogProgress:
    """A progress bar on a terminal, else a :class:`LogProgress`."""
    if on_terminal():
        return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)
    return LogProgress(total, desc, unit, settings()["GLIMPSE_PROGRESS_EVERY"])
