"""Peak memory of a process tree, sampled from /proc (no psutil needed).

RSS summed over a tree counts shared pages (torch's libraries, fork-shared
model weights) once per process, so PSS (proportional set size, from
``smaps_rollup``) is reported too: the sum of PSS is the tree's real share of RAM.
"""

from __future__ import annotations

import threading
import time

from bench.sysinfo import descendants


def _kb(path: str, keys: tuple[str, ...]) -> dict[str, int]:
    out = {}
    try:
        with open(path) as f:
            for line in f:
                k = line.split(":", 1)[0]
                if k in keys:
                    out[k] = int(line.split()[1])
    except OSError:
        pass
    return out


def proc_mem(pid: int, pss: bool = True) -> dict[str, int]:
    """rss, hwm (peak rss) and pss (when asked; 0 otherwise) in KiB for one process."""
    st = _kb(f"/proc/{pid}/status", ("VmRSS", "VmHWM"))
    p = _kb(f"/proc/{pid}/smaps_rollup", ("Pss",)) if pss else {}
    return {"rss": st.get("VmRSS", 0), "hwm": st.get("VmHWM", 0), "pss": p.get("Pss", 0)}


class TreeWatch:
    """Sample a process tree every ``every`` seconds; keep the peaks (MiB).

    PSS only every ``pss_every`` seconds: ``smaps_rollup`` walks the page tables, ~70 CPU-ms
    for a 2.5 GB process here. Sampled at 4 Hz it took ~14% of a 2-core machine away from the
    very run being timed (sessions 1-3 figures before this change are low by about that much).
    """

    def __init__(self, pid: int, every: float = 0.25, pss_every: float = 5.0):
        self.pid, self.every, self.pss_every = pid, every, pss_every
        self._pss_at = 0.0
        self.peak_rss_mib = 0.0
        self.peak_pss_mib = 0.0
        self.peak_main_hwm_mib = 0.0
        self.last: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        pids = [self.pid] + descendants(self.pid)
        now = time.monotonic()
        want_pss = now - self._pss_at >= self.pss_every
        if want_pss:
            self._pss_at = now
        mems = [proc_mem(p, want_pss) for p in pids]
        rss = sum(m["rss"] for m in mems) / 1024
        pss = sum(m["pss"] for m in mems) / 1024 if want_pss else self.last.get("pss_mib", 0.0)
        main = mems[0]
        self.peak_rss_mib = max(self.peak_rss_mib, rss)
        self.peak_pss_mib = max(self.peak_pss_mib, pss)
        self.peak_main_hwm_mib = max(self.peak_main_hwm_mib, main["hwm"] / 1024)
        self.last = {"rss_mib": rss, "pss_mib": pss, "main_rss_mib": main["rss"] / 1024, "processes": len(pids)}

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)
