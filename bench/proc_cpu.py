"""CPU seconds by kind of process while a command runs: where a run's CPU goes (e.g. which of
Ray's processes cost what beside the embedding itself). Linux only: reads /proc.

    with ProcCPU() as cpu:
        subprocess.run(...)
    print(cpu.table())

Every process that appears while sampling is followed (its last user+system time seen counts, so a
process that exits between samples loses at most one interval's time); processes already running
before the start are left out, so the figures are the command's and what it started.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")

# (substring of the command line, kind), first match wins. Ray workers rename themselves
# ("ray::MapWorker…") once started, and their first command line names the raylet: the title goes first,
# and a process's last command line is the one that counts.
KINDS = [
    ("ray::MapWorker", "ray actor (embedding)"),
    ("ray::_MapWorker", "ray actor (embedding)"),
    ("ray::Embedder", "ray actor (embedding)"),
    ("ray::IDLE", "ray idle worker"),
    ("ray::RuntimeEnvAgent", "ray runtime-env agent"),
    ("ray::DashboardAgent", "ray dashboard agent"),
    ("ray::_AutoscalingCoordinator", "ray data autoscaling actor"),
    ("ray::", "ray other actor/task"),
    ("default_worker.py", "ray worker (starting)"),
    ("gcs_server", "ray gcs"),
    ("raylet/raylet", "ray raylet"),
    ("dashboard/agent.py", "ray dashboard agent"),
    ("runtime_env/agent", "ray runtime-env agent"),
    ("log_monitor", "ray log monitor"),
    ("monitor.py", "ray autoscaler monitor"),
    ("glimpse.cli", "driver (glimpse)"),
    ("multiprocessing", "decode processes"),
]


def _kind(cmdline: str) -> str:
    for needle, kind in KINDS:
        if needle in cmdline:
            return kind
    return cmdline.split(" ")[0].rsplit("/", 1)[-1][:40] or "?"


def _cpu(pid: str) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


class ProcCPU:
    def __init__(self, every: float = 0.2):
        self.every = every
        self.before = set(p for p in os.listdir("/proc") if p.isdigit())
        self.seen: dict[str, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or pid in self.before:
                continue
            cpu = _cpu(pid)
            if cpu is None:
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if not cmd.strip():  # exiting (a zombie has no command line): keep what was seen
                if pid in self.seen:
                    self.seen[pid] = (self.seen[pid][0], max(cpu, self.seen[pid][1]))
                continue
            self.seen[pid] = (_kind(cmd), cpu)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def __enter__(self) -> ProcCPU:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def by_kind(self) -> dict[str, tuple[float, int]]:
        """kind -> (CPU seconds, processes)."""
        out: dict[str, tuple[float, int]] = {}
        for kind, cpu in self.seen.values():
            s, n = out.get(kind, (0.0, 0))
            out[kind] = (s + cpu, n + 1)
        return dict(sorted(out.items(), key=lambda kv: -kv[1][0]))

    def total(self) -> float:
        return sum(s for s, _ in self.by_kind().values())
