"""Progress bars on a terminal, plain log lines otherwise (cron mail, journald)."""

from __future__ import annotations

import logging
import sys

from tqdm import tqdm

log = logging.getLogger("glimpse")


def on_terminal() -> bool:
    return sys.stderr.isatty()


def bar(total: int | None, desc: str, unit: str = "img") -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, disable=not on_terminal(), dynamic_ncols=True, leave=False)
