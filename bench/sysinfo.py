"""Machine, versions and load for the benchmark header; pausing the other CPU hogs.

Timed sections run inside :func:`quiet_machine`, which SIGSTOPs any background
``training`` job (another engineer's, it takes a core) and always SIGCONTs it
afterwards, even on an exception or Ctrl-C.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from importlib import metadata

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def mem_total_gb() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "-"


def git_rev() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except OSError:
        return "?"


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "mem_gb": round(mem_total_gb(), 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": version("torch"),
        "open_clip_torch": version("open_clip_torch"),
        "faiss": version("faiss-cpu") if version("faiss-cpu") != "-" else version("faiss-gpu"),
        "onnxruntime": version("onnxruntime"),
        "pillow": version("pillow"),
        "numpy": version("numpy"),
        "git": git_rev(),
    }


# ---------------------------------------------------------------- other jobs


def _ancestors() -> set[int]:
    out, pid = set(), os.getpid()
    while pid > 1:
        out.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def training_pids() -> list[int]:
    """Background training jobs (python … training …) that are not us or our parents."""
    mine = _ancestors()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in mine:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        cmd = b" ".join(argv).decode(errors="replace")
        if "python" in os.path.basename(argv[0].decode(errors="replace")) and "training" in cmd and "bench" not in cmd:
            pids.append(int(entry))
    return pids


_stopped: set[int] = set()


def _resume_all() -> None:
    for pid in list(_stopped):
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        _stopped.discard(pid)


atexit.register(_resume_all)


def _on_signal(signum, _frame):
    _resume_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


for _sig in (signal.SIGTERM, signal.SIGHUP):
    try:
        signal.signal(_sig, _on_signal)
    except (ValueError, OSError):  # not the main thread
        pass


@contextlib.contextmanager
def quiet_machine(note: dict | None = None, pause: bool = True):
    """Pause background training jobs for the duration; record load before and after."""
    pids = training_pids() if pause else []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGSTOP)
            _stopped.add(pid)
        except ProcessLookupError:
            pass
    # The training job has a watchdog that SIGCONTs it every 20 s: re-stop it for the timed section only.
    done = threading.Event()

    def keep_stopped():
        while not done.wait(0.25):
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGSTOP)
                except ProcessLookupError:
                    pass

    guard = threading.Thread(target=keep_stopped, daemon=True)
    if pids:
        guard.start()
        time.sleep(0.2)
    before = loadavg()
    busy0, t0, own0 = _system_busy_s(), time.monotonic(), _own_cpu_s()
    try:
        yield
    finally:
        done.set()
        if guard.is_alive():
            guard.join()
        _resume_all()
        if note is not None:
            wall = max(time.monotonic() - t0, 1e-9)
            note["load_before"] = before
            note["load_after"] = loadavg()
            # CPU that other processes used meanwhile, in cores (0 = we had the machine to ourselves).
            note["other_cores"] = round(max(0.0, (_system_busy_s() - busy0) - (_own_cpu_s() - own0)) / wall, 2)
            note["paused_pids"] = pids


def _system_busy_s() -> float:
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return (sum(vals[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """This process, its waited-for children and its live descendants (user + system)."""
    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    tck = os.sysconf("SC_CLK_TCK")
    for pid in descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tck  # utime, stime
        except (OSError, ValueError, IndexError):
            pass
    return total


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, stack = [], [root]
    while stack:
        for c in children.get(stack.pop(), []):
            out.append(c)
            stack.append(c)
    return out


if __name__ == "__main__":  # pragma: no cover
    print(machine(), loadavg(), training_pids(), file=sys.stderr)
