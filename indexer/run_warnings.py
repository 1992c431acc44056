"""What a run skipped or changed without failing (bad caption rows, cut captions): one line each.

A manifest with a million bad rows must not flood the log or the job record, so
both are capped; the count is always exact.
"""

from __future__ import annotations

import logging

from search.media.files import shown

log = logging.getLogger("glimpse.indexer")

LOG_LIMIT = 20  # warnings logged one by one; the rest only counted
KEEP_LIMIT = 50  # lines kept for the job record (jobs.warnings, `glimpse stats`)


class RunWarnings:
    def __init__(self, log_limit: int = LOG_LIMIT, keep_limit: int = KEEP_LIMIT):
        self.log_limit = log_limit
        self.keep_limit = keep_limit
        self.lines: list[str] = []
        self.count = 0

    def add(self, line: str) -> None:
        line = shown(line)  # names a file or holds a caption: kept and shown with nothing a terminal obeys
        self.count += 1
        if self.count <= self.log_limit:
            log.warning("%s", line)
        elif self.count == self.log_limit + 1:
            log.warning("more warnings are only counted; `glimpse stats` lists the first %d", self.keep_limit)
        if len(self.lines) < self.keep_limit:
            self.lines.append(line)

    def __len__(self) -> int:
        return self.count

    def summary(self) -> str | None:
        """One line for the end of the run, or None when there was nothing to report."""
        if not self.count:
            return None
        return f"{self.count} warning(s): rows, captions or links skipped or cut; `glimpse stats` lists them"

    def as_text(self) -> str | None:
        """For ``jobs.warnings``: the kept lines, then how many more there were."""
        if not self.count:
            return None
        more = self.count - len(self.lines)
        return "\n".join(self.lines + ([f"... and {more} more"] if more else []))
