#!/usr/bin/env python3
"""Interleaved A/B of ``bench/run.py`` between two checkouts: is the new one slower beyond noise?

    git worktree add /tmp/old COMMIT
    python bench/ab.py /tmp/old . 3 -- --only index,query --no-int8 --sizes 10000,100000

Each round runs ``bench/run.py --no-write ARGS`` once in each tree (the order alternates, so a
machine that gets busier hits both alike); each tree keeps its own ``bench-data/`` (its corpus and
synthetic homes are built by its own code, once). Every metric is the first number of run.py's value
column; the table gives each side's median over the rounds and new/old. Prints Markdown.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def one_run(tree: Path, args: list[str]) -> dict[str, float]:
    results = tree / "bench-data" / "results"
    before = set(results.glob("*.json")) if results.exists() else set()
    subprocess.run(
        [sys.executable, "bench/run.py", "--no-write", *args], cwd=tree, check=True, stdout=subprocess.DEVNULL
    )
    (made,) = set(results.glob("*.json")) - before or {max(results.glob("*.json"), key=lambda p: p.stat().st_mtime)}
    out = {}
    for metric, value, _target, _cond in json.loads(made.read_text())["rows"]:
        found = NUMBER.search(value.replace(",", ""))
        if found:
            out[metric] = float(found.group())
    return out


def main(argv: list[str]) -> int:
    if "--" in argv:
        cut = argv.index("--")
        argv, run_args = argv[:cut], argv[cut + 1 :]
    else:
        run_args = []
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    trees = {"old": Path(argv[0]).resolve(), "new": Path(argv[1]).resolve()}
    rounds = int(argv[2])
    seen: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
    for r in range(rounds):
        for side in ("old", "new") if r % 2 == 0 else ("new", "old"):
            t0 = time.perf_counter()
            for metric, v in one_run(trees[side], run_args).items():
                seen[side].setdefault(metric, []).append(v)
            print(f"[round {r + 1}/{rounds}] {side}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    print(f"| metric | old ({rounds} runs, median) | new | new/old |")
    print("| --- | --- | --- | --- |")
    for metric, old_values in seen["old"].items():
        new_values = seen["new"].get(metric)
        if not new_values:
            continue
        o, n = statistics.median(old_values), statistics.median(new_values)
        ratio = f"{n / o:.2f}" if o else "n/a"
        print(f"| {metric} | {o:g} | {n:g} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
