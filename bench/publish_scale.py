"""Publish at scale (issue 15): full and incremental publish time and peak RSS, recall@10 against
exact search, FAISS search time single-threaded, bytes per image on disk.

    python -m bench.publish_scale --n 100000            # 1M: --n 1000000; 10M: --n 10000000

The home (rows + float16 vectors, clustered around ``--centres`` subjects) is cached under
``bench-data/scale/``. Each publish runs in a child process watched by bench.memwatch, so its
peak RSS is the publish's own. The incremental step deletes 10k rows and adds 10k new ones,
publishes, then puts the rows back and publishes again (the cached home stays the same corpus, its
live index in step with its rows, for the next run and for the benchmarks that serve it).
Results go to stdout and ``bench-data/scale/publish-N.json``. Index-type settings
(GLIMPSE_FLAT_MAX, GLIMPSE_PQ_MIN) are read from the environment as Glimpse reads them.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.memwatch import TreeWatch
from bench.synth import Mixture, insert_rows, recall_at_10, synth_rows

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "bench-data" / "scale"
CHANGE = 10_000


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def child_publish(home: Path, rebuild: bool) -> dict:
    """Publish in a child process; its wall time and peak RSS (VmHWM and sampled tree RSS)."""
    code = (
        "import json, sys, logging; logging.basicConfig(level=logging.INFO);"
        "from bench.synth import publish_home; v = publish_home(sys.argv[1], rebuild=sys.argv[2] == '1');"
        "print(json.dumps(v))"
    )
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(home), "1" if rebuild else "0"], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    with TreeWatch(proc.pid, every=0.5, pss_every=3600) as w:
        out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"publish failed (rc {proc.returncode})")
    version = json.loads(out.strip().splitlines()[-1])
    manifest = json.loads((home / "index" / version / "manifest.json").read_text())
    return {
        "s": round(time.perf_counter() - t0, 1),
        "peak_rss_mib": round(max(w.peak_main_hwm_mib, w.peak_rss_mib)),
        "version": version,
        "built": manifest.get("built"),
        "index_type": manifest["index_type"],
    }


def change_rows(home: Path, n: int, seed: int, centres: int, scene: int) -> tuple[list, list[int]]:
    """Delete CHANGE spread rows and add CHANGE new ones; returns what it takes to undo it."""
    db = home / "glimpse.db"
    con = sqlite3.connect(db)
    gone = [int(i) for i in np.random.default_rng(11).choice(np.arange(1, n + 1), CHANGE, replace=False)]
    cols = "id, root_id, path, size, mtime, content_hash, width, height, format, status, vector, vector_seq, indexed_at"
    saved = []
    for i in range(0, len(gone), 500):
        part = gone[i : i + 500]
        saved += con.execute(f"SELECT {cols} FROM images WHERE id IN ({','.join('?' * len(part))})", part).fetchall()
        con.execute(f"DELETE FROM images WHERE id IN ({','.join('?' * len(part))})", part)
    root_id, root_path = con.execute("SELECT id, path FROM roots").fetchone()
    con.commit()
    con.close()
    insert_rows(db, Mixture.for_home(seed, centres, n, scene), n, CHANGE, root_id, root_path, stream0=9_999)
    return saved, list(range(n + 1, n + CHANGE + 1))


def undo_change(home: Path, saved: list, added: list[int]) -> None:
    con = sqlite3.connect(home / "glimpse.db")
    for i in range(0, len(added), 500):
        part = added[i : i + 500]
        con.execute(f"DELETE FROM images WHERE id IN ({','.join('?' * len(part))})", part)
    cols = "id, root_id, path, size, mtime, content_hash, width, height, format, status, vector, vector_seq, indexed_at"
    con.executemany(f"INSERT INTO images ({cols}) VALUES ({','.join('?' * 13)})", saved)
    con.commit()
    con.close()


def disk_bytes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--centres", type=int, default=4000, help="mixture subjects (clusters) the vectors gather around")
    ap.add_argument(
        "--scene", type=int, default=50, help="points per scene, the mixture's finest level (0: two levels only)"
    )
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--tag", default="", help="suffix for the result file (e.g. the settings tried)")
    ap.add_argument(
        "--incremental-only", action="store_true", help="keep the home's live index: measure the incremental steps only"
    )
    args = ap.parse_args()
    home = DATA / (f"home-{args.n}-c{args.centres}" + (f"-s{args.scene}" if args.scene else ""))
    res: dict = {
        "n": args.n,
        "centres": args.centres,
        "scene": args.scene,
        "settings": {k: v for k, v in os.environ.items() if k in ("GLIMPSE_FLAT_MAX", "GLIMPSE_PQ_MIN")},
        "load_before": _load(),
    }
    t0 = time.perf_counter()
    stamp = synth_rows(home, args.n, args.seed, centres=args.centres, scene=args.scene)
    res["rows_s"] = stamp.get("rows_s") if time.perf_counter() - t0 > 1 else f"cached ({stamp.get('rows_s')}s)"
    print(f"rows: {res['rows_s']}; load {res['load_before']}", flush=True)

    if not args.incremental_only:
        full = child_publish(home, rebuild=True)
        res["full_publish"] = full
        print("full publish:", full, flush=True)
        folder = home / "index" / full["version"]
        files = disk_bytes(folder)
        res["index_bytes_per_image"] = round(sum(files.values()) / args.n, 1)
        res["index_files"] = files
        res["db_bytes_per_image"] = round((home / "glimpse.db").stat().st_size / args.n, 1)

    saved, added = change_rows(home, args.n, args.seed, args.centres, args.scene)
    try:
        inc = child_publish(home, rebuild=False)
        res["incremental_publish"] = inc
        print(f"incremental publish (+{CHANGE}, -{CHANGE}):", inc, flush=True)
        rec = recall_at_10(home, args.queries)
        res["after_incremental"] = rec
        print("recall/search after the incremental publish:", rec, flush=True)
    finally:
        undo_change(home, saved, added)
    # Publish the restored corpus (incremental again: a second sample), so the home's live index
    # matches its rows for the benchmarks that serve it (bench/run.py --query-home, bench/filters.py).
    res["restoring_publish"] = child_publish(home, rebuild=False)
    print("incremental publish restoring the corpus:", res["restoring_publish"], flush=True)
    res["load_after"] = _load()
    out = DATA / f"publish-{args.n}{args.tag}.json"
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
