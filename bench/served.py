"""A real `glimpse serve` for a benchmark: started on a free loopback port, its URL read from its log.

Used by bench/fuzz.py and bench/upload_memory.py.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def glimpse_serving(
    home: Path, env: dict[str, str] | None = None, drop: tuple[str, ...] = ()
) -> Iterator[tuple[subprocess.Popen, str]]:
    """`glimpse serve --port 0` over ``home`` (``env`` added to this process's, ``drop`` removed from it);
    yields the process and its base URL, and stops it on the way out."""
    full = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    for name in drop:
        full.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "glimpse.cli", "--home", str(home), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env=full,
    )
    lines: list[str] = []
    try:
        url = None
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"Glimpse is serving on (http://\S+)/", line)
            if m:
                url = m.group(1)
                break
        if url is None:
            raise RuntimeError("glimpse serve did not start:\n" + "".join(lines))
        # Keep reading its log, so a chatty server never blocks on a full pipe.
        out = proc.stdout
        threading.Thread(target=lambda: lines.extend(out), daemon=True).start()
        yield proc, url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
