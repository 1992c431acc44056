"""Interleaved no-op reindex of 100k tiny files: old commit vs new, each with its own synthetic home.

usage: python bench/reindex_ab.py OLD_TREE NEW_TREE ROUNDS
OLD_TREE / NEW_TREE: checkouts of two commits (e.g. `git worktree add /tmp/old COMMIT`). Each tree's own
bench.synth builds its home (its own schema); runs alternate old/new so machine noise hits both alike.
"""

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

old, new, rounds = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
py = sys.executable
data = Path(__file__).resolve().parent.parent / "bench-data" / "reindex-ab"
tree = data / "tiny100k"
homes = {"old": data / "home-old", "new": data / "home-new"}
src = {"old": old, "new": new}
n = 100_000
for k in ("old", "new"):
    code = (
        f"import sys; sys.path.insert(0, {str(src[k])!r});"
        f"from bench.synth import synth_home, tiny_tree;"
        f"t = tiny_tree(__import__('pathlib').Path({str(tree)!r}), {n});"
        f"synth_home(__import__('pathlib').Path({str(homes[k])!r}), {n}, files_root=t)"
    )
    subprocess.run([py, "-c", code], check=True, cwd=src[k])


def run(k):
    """Wall seconds, CPU seconds (user + system of the child: less sensitive than wall time to a
    busy machine) and the run's summary line."""
    env = dict(os.environ, GLIMPSE_HOME=str(homes[k]))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run([py, "-m", "glimpse.cli", "reindex"], cwd=src[k], env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if p.returncode != 0:
        raise SystemExit(f"{k} failed: {p.stderr[-2000:]}")
    return dt, cpu, p.stdout.strip().splitlines()[-1]


for k in ("old", "new"):
    run(k)  # warm the page cache, and a first run after the synthetic build
times: dict[str, list[float]] = {"old": [], "new": []}
cpus: dict[str, list[float]] = {"old": [], "new": []}
for i in range(rounds):
    for k in ("old", "new") if i % 2 == 0 else ("new", "old"):
        dt, cpu, last = run(k)
        times[k].append(dt)
        cpus[k].append(cpu)
        print(f"round {i} {k}: {dt:.2f}s wall, {cpu:.2f}s cpu  {last}", flush=True)
print("load", os.getloadavg())
for k in ("old", "new"):
    print(k, f"median {statistics.median(times[k]):.2f} s wall", [round(t, 2) for t in times[k]])
    print(k, f"median {statistics.median(cpus[k]):.2f} s cpu", [round(t, 2) for t in cpus[k]])
