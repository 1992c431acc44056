"""The CPU time of one command and of every process it starts, counted by the kernel: the command runs
in a fresh CPU-accounting cgroup of its own, which every process it forks inherits (Ray's GCS, raylet,
agents and workers included), and nothing else is in it. Unlike sampling /proc (bench/proc_cpu.py) no
short-lived process is missed, and other people's load on the machine is not counted.

    with CgroupCPU() as cg:
        subprocess.run(cmd, preexec_fn=cg.join)
    print(cg.cpu_s)   # user + system seconds of the command and its descendants

Needs root (or a delegated cgroup): cgroup v1's ``cpuacct`` hierarchy (``cpuacct.usage``), else cgroup
v2 (``cpu.stat``'s ``usage_usec``). ``available()`` says whether it can run here, and why not.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

V1 = Path("/sys/fs/cgroup/cpuacct")
V2 = Path("/sys/fs/cgroup")


def _hierarchy() -> tuple[Path, str]:
    """(parent folder for our cgroups, "v1" | "v2")."""
    if (V1 / "cpuacct.usage").exists():
        return V1, "v1"
    if (V2 / "cgroup.controllers").exists():
        return V2, "v2"
    raise OSError("no cpuacct (cgroup v1) or cgroup v2 hierarchy under /sys/fs/cgroup")


def available() -> str | None:
    """None when a cgroup can be made here, else why not."""
    try:
        parent, _ = _hierarchy()
        probe = parent / f"glimpse-probe-{uuid.uuid4().hex[:8]}"
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        return f"cannot create a cgroup: {exc}"
    return None


class CgroupCPU:
    """A cgroup for one command; ``join`` (as ``preexec_fn``) moves the starting process into it."""

    def __init__(self, settle_s: float = 30.0):
        parent, self.kind = _hierarchy()
        self.path = parent / f"glimpse-bench-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.settle_s = settle_s  # how long to wait for the command's leftovers (Ray's daemons) to exit
        self.cpu_s = 0.0
        self.leftover = 0  # processes still in the cgroup when it was read (0: every one had exited)

    def __enter__(self) -> CgroupCPU:
        self.path.mkdir()
        return self

    def join(self) -> None:
        """Runs in the child between fork and exec: from then on it and its descendants are counted."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def _usage(self) -> float:
        if self.kind == "v1":
            return int((self.path / "cpuacct.usage").read_text()) / 1e9
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, value = line.split()
            if key == "usage_usec":
                return int(value) / 1e6
        raise OSError(f"no usage_usec in {self.path / 'cpu.stat'}")

    def _procs(self) -> list[int]:
        return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]

    def __exit__(self, *exc) -> None:
        deadline = time.monotonic() + self.settle_s
        while self._procs() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.cpu_s = self._usage()
        left = self._procs()
        self.leftover = len(left)
        # Never leave a process behind in a cgroup we remove: back to the parent (still running: reported).
        for pid in left:
            try:
                (self.path.parent / "cgroup.procs").write_text(str(pid))
            except OSError:
                pass
        try:
            self.path.rmdir()
        except OSError:
            pass
