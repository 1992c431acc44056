#!/usr/bin/env python3
"""`glimpse index --engine ray` against `--engine local` on the same JPEGs, interleaved.

Per run: the whole command's wall time, the embedding phase (the indexer's summary line
"embedded N images in X s", which for Ray includes starting the cluster and its workers) and the
driver's write rate (rows committed per second of database-write busy time: what bounds how many
GPU workers one driver can feed). Prints a Markdown table for BENCHMARKS.md.

  python bench/ray_overhead.py -n 1000 --rounds 3            # private Ray on 127.0.0.1
  python bench/ray_overhead.py -n 300 --rounds 1 --two-nodes # also: a head + a second node, 1 CPU each

``--two-nodes`` starts `ray start --head --num-cpus 1` and `ray start --address … --num-cpus 1` on
127.0.0.1 (stopped with `ray stop --force` afterwards), runs with `--workers 2` (one CPU each, so
one worker per node) and checks that the rows equal the local run's; all of it in a network
namespace with only loopback (`unshare -n`, root), where Ray keeps 127.0.0.1 as the nodes' address.
First a table of the driver's commit rate by rows per commit (``write_capacity``).

``--cgroup`` is the cost model (issue 28), and what GLIMPSE_RAY_MIN_FILES is chosen from:

  python bench/ray_overhead.py --cgroup --sizes 200,800 --rounds 2 --image-size 640x480

Each run (a fresh home, `glimpse index` of N photo-like JPEGs of one size, local or `--engine ray` on a
private cluster) runs in its own CPU-accounting cgroup (bench/cgroup_cpu.py), so the CPU of every process
it starts, Ray's daemons and workers included, is counted and nobody else's. With the median of each
size, a line through the sizes splits each engine's cost into a fixed cost per run (CPU-s, wall s) and a
marginal cost per image (CPU-ms, wall ms), and where the lines cross is where Ray starts to pay on this
machine. Root needed (cgroups; run it under `unshare -n` to keep every Ray socket on loopback). Results
also go to bench-data/ray-cgroup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.cgroup_cpu import CgroupCPU, available  # noqa: E402
from bench.proc_cpu import ProcCPU  # noqa: E402
from bench.run import DATA, corpus, run_timed  # noqa: E402

RAY = str(Path(sys.executable).parent / "ray")
# Ray's servers on loopback, no usage report; GLIMPSE_RAY_MIN_FILES=0: a Ray run is on Ray however small;
# GLIMPSE_OCR=off: the text reader (after publish, the same on both engines) is not what is measured.
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "GLIMPSE_RAY_MIN_FILES": "0",
    "GLIMPSE_OCR": "off",
}
SUMMARY = re.compile(r"embedded (\d+) images in ([\d.]+)s .*database writes ([\d.]+)s")


def index(home: Path, pics: Path, args, *extra: str) -> dict:
    shutil.rmtree(home, ignore_errors=True)
    cmd = [sys.executable, "-m", "glimpse.cli", "--home", str(home), "-v", "index", str(pics)]
    cmd += ["--model", args.model, "--pretrained", args.pretrained, *extra]
    with ProcCPU() as cpu:
        r = run_timed(cmd, env=dict(os.environ, **RAY_ENV), watch=False)
    if r["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r['rc']}):\n{r['stderr'][-3000:]}")
    m = SUMMARY.search(r["stderr"])
    assert m, r["stderr"][-2000:]
    n, embed_s, write_s = int(m.group(1)), float(m.group(2)), float(m.group(3))
    return {
        "wall_s": r["wall_s"],
        "embed_s": embed_s,
        "rows_per_write_s": n / max(write_s, 1e-9),
        "log": r["stderr"],
        "cpu": cpu.by_kind(),
    }


def rows(home: Path) -> list[tuple]:
    with sqlite3.connect(home / "glimpse.db") as db:
        return db.execute(
            "select path, status, content_hash, width, height, vector from images order by path"
        ).fetchall()


def same_rows(a: list[tuple], b: list[tuple]) -> bool:
    import numpy as np

    if [r[:5] for r in a] != [r[:5] for r in b]:
        return False
    va = np.array([np.frombuffer(r[5], np.float16) for r in a], np.float32)
    vb = np.array([np.frombuffer(r[5], np.float16) for r in b], np.float32)
    return bool(np.abs(va - vb).max() <= 2e-3)


def wait_for_nodes(address: str, want: int, env: dict, timeout: float = 60.0) -> int:
    """Alive nodes of the cluster at ``address`` once ``want`` are up (or the timeout passes)."""
    import time

    probe = (
        "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
        "print(sum(n['Alive'] for n in ray.nodes()))"
    )
    deadline, alive = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        out = subprocess.run(
            [sys.executable, "-c", probe, address], env=dict(env, RAY_AUTH_MODE="token"), capture_output=True, text=True
        )
        alive = int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0
        if alive >= want:
            break
        time.sleep(1)
    return alive


def two_nodes(pics: Path, args, local_home: Path) -> str:
    temp = tempfile.mkdtemp(prefix="gr-", dir="/tmp")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, **RAY_ENV)
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0", "--disable-usage-stats"]
    try:
        subprocess.run(
            [RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}", *common],
            env=env,
            check=True,
            capture_output=True,
        )
        # A joining node must not get RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: `ray start --address` refuses to
        # join with it ("multi-node clusters are not supported"); --node-ip-address keeps it on loopback.
        join_env = {k: v for k, v in env.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
        join_env["RAY_AUTH_MODE"] = "token"  # the head turned token auth on; a joining node must send it
        subprocess.run([RAY, "start", f"--address={address}", *common], env=join_env, check=True, capture_output=True)
        alive = wait_for_nodes(address, 2, env)
        home = DATA / "homes" / "ray-two-nodes"
        r = index(home, pics, args, "--engine", "ray", "--ray-address", address, "--workers", "2")
        nodes = re.search(r"(\d+) node\(s\)", r["log"])
        same = same_rows(rows(home), rows(local_home))
        return (
            f"two nodes (head + `ray start --address`, 1 CPU each, `--workers 2`): {alive} alive before the run, "
            f"{nodes.group(1) if nodes else '?'} seen by the run, embedding {r['embed_s']:.1f} s, "
            f"rows equal to the local run's: {same}"
        )
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True)
        shutil.rmtree(temp, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=1000, help="JPEGs (bench/make_corpus.py, deterministic)")
    ap.add_argument("--rounds", type=int, default=3, help="local, ray pairs, interleaved")
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--pretrained", default="none", help="random weights: the same work, no download")
    ap.add_argument("--two-nodes", action="store_true")
    ap.add_argument("--two-nodes-only", action="store_true", help=argparse.SUPPRESS)  # inside the namespace
    ap.add_argument("--rounds-only", action="store_true", help="skip the write-capacity table")
    ap.add_argument(
        "--ray-args", default="", help="more `glimpse index` arguments for the Ray runs, e.g. '--batch-size 64'"
    )
    ap.add_argument("--cgroup", action="store_true", help="the cost model: fixed and marginal CPU by cgroup")
    ap.add_argument("--sizes", default="200,800", help="--cgroup: images per run (at least two sizes)")
    ap.add_argument("--image-size", default="640x480", help="--cgroup: WxH of the photo-like JPEGs")
    args = ap.parse_args(argv)
    if args.cgroup:
        return cost_model(args)
    pics = corpus(args.n)
    if args.two_nodes_only:
        print(two_nodes(pics, args, DATA / "homes" / "ray-ab-local"))
        return 0
    if not args.rounds_only:
        print(write_capacity())
    load_before = os.getloadavg()
    results: dict[str, list[dict]] = {"local": [], "ray": []}
    for _ in range(args.rounds):
        results["local"].append(index(DATA / "homes" / "ray-ab-local", pics, args))
        results["ray"].append(
            index(DATA / "homes" / "ray-ab-ray", pics, args, "--engine", "ray", *args.ray_args.split())
        )
    same = same_rows(rows(DATA / "homes" / "ray-ab-local"), rows(DATA / "homes" / "ray-ab-ray"))
    load_after = os.getloadavg()
    med = {
        k: {m: statistics.median(r[m] for r in v) for m in ("wall_s", "embed_s", "rows_per_write_s")}
        for k, v in results.items()
    }
    print(
        f"{args.n} JPEGs, {args.model} ({args.pretrained}), {args.rounds} interleaved round(s); "
        f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f}; {os.cpu_count()} cores"
    )
    print(
        "| engine | whole command (median s) | embedding phase (median s) | driver writes (rows/s) | runs (embed s) |"
    )
    print("|---|---|---|---|---|")
    for k, v in results.items():
        runs = ", ".join(f"{r['embed_s']:.1f}" for r in v)
        print(
            f"| {k} | {med[k]['wall_s']:.1f} | {med[k]['embed_s']:.1f} | {med[k]['rows_per_write_s']:,.0f} | {runs} |"
        )
    ratio = med["ray"]["embed_s"] / med["local"]["embed_s"]
    gpus = med["ray"]["rows_per_write_s"] / 3000
    print(
        f"ray/local embedding phase: {ratio:.2f}x (target <= 1.15x); rows equal: {same}; "
        f"the driver's writes keep up with {gpus:.1f} GPUs at 3,000 img/s each"
    )
    print("\nCPU seconds by process, median over the rounds (processes started by the command):")
    print("| process | local | ray |")
    print("|---|---|---|")
    kinds = sorted(
        {k for v in results.values() for r in v for k in r["cpu"]},
        key=lambda k: -max(statistics.median(r["cpu"].get(k, (0.0, 0))[0] for r in v) for v in results.values()),
    )
    for kind in kinds + ["all"]:
        cells = []
        for v in results.values():
            secs = [
                sum(c for c, _ in r["cpu"].values()) if kind == "all" else r["cpu"].get(kind, (0.0, 0))[0] for r in v
            ]
            cells.append(f"{statistics.median(secs):.1f}")
        print(f"| {kind} | {' | '.join(cells)} |")
    if args.two_nodes:
        # Two Ray nodes on one machine must both listen on 127.0.0.1; Ray turns 127.0.0.1 into the
        # machine's outward address unless it has none: run the nodes and the driver in a fresh network
        # namespace holding only loopback (root needed).
        inner = [sys.executable, __file__, "--two-nodes-only", "-n", str(args.n), "--model", args.model]
        inner += ["--pretrained", args.pretrained]
        out = subprocess.run(
            ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *inner],
            capture_output=True,
            text=True,
        )
        print(out.stdout.strip() or f"two nodes: failed ({out.returncode}): {out.stderr[-2000:]}")
    return 0


def photo_corpus(n: int, size: str) -> Path:
    """``n`` photo-like JPEGs (bench/make_corpus.py's images) all of ``size`` (WxH), deterministic: the
    first n files of one folder of that size, hard-linked (the indexer skips symlinks leading outside)."""
    w, h = (int(v) for v in size.lower().split("x"))
    base = DATA / f"corpus-{w}x{h}"
    have = sorted(base.glob("*.jpg")) if base.exists() else []
    if len(have) < n:
        import bench.make_corpus as mc

        base.mkdir(parents=True, exist_ok=True)
        mc.pick_size = lambda rng, profile: (w, h)  # every image at this size; content as the corpus's
        t0 = time.perf_counter()
        for i in range(len(have), n):
            mc.make_image(20240601, i, "fixed").save(base / f"img_{i:06d}.jpg", "JPEG", quality=90)
        print(f"generated {n - len(have)} {w}x{h} JPEGs in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        have = sorted(base.glob("*.jpg"))
    out = DATA / f"corpus-{w}x{h}-{n}"
    if len(list(out.glob("*.jpg"))) != n:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        for p in have[:n]:
            os.link(p, out / p.name)
    return out


def cgroup_run(pics: Path, engine: str, args) -> dict:
    """One `glimpse index` of ``pics`` in a fresh home, in a cgroup of its own: CPU of all its processes."""
    home = DATA / "homes" / f"ray-cgroup-{engine}"
    shutil.rmtree(home, ignore_errors=True)
    cmd = [sys.executable, "-m", "glimpse.cli", "--home", str(home), "-v", "index", str(pics)]
    cmd += ["--model", args.model, "--pretrained", args.pretrained]
    if engine == "ray":
        cmd += ["--engine", "ray", *args.ray_args.split()]
    env = dict(os.environ, **RAY_ENV, RAY_ADDRESS="")  # a private cluster on 127.0.0.1, started by the run
    with CgroupCPU() as cg:
        t0 = time.perf_counter()
        r = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, preexec_fn=cg.join)
        wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    m = SUMMARY.search(r.stderr)
    assert m, r.stderr[-2000:]
    n = len(list(pics.glob("*.jpg")))
    assert int(m.group(1)) == n, f"embedded {m.group(1)} of {n}"
    assert ("a private Ray cluster" in r.stderr) == (engine == "ray"), r.stderr[-2000:]
    return {"n": n, "cpu_s": cg.cpu_s, "wall_s": wall, "embed_s": float(m.group(2)), "leftover": cg.leftover}


def line(points: dict[int, float]) -> tuple[float, float]:
    """(fixed, marginal): the least-squares line through (images, cost) points."""
    xs, ys = list(points), list(points.values())
    mx, my = statistics.mean(xs), statistics.mean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def break_even(local: tuple[float, float], ray: tuple[float, float]) -> float | None:
    """Images per run from which Ray costs less than local (None: never, its marginal cost is not lower)."""
    saved = local[1] - ray[1]
    return (ray[0] - local[0]) / saved if saved > 0 else None


def cost_model(args) -> int:
    why = available()
    if why:
        print(f"--cgroup: {why} (root needed)", file=sys.stderr)
        return 2
    sizes = sorted({int(v) for v in args.sizes.split(",") if v})
    if len(sizes) < 2:
        print("--cgroup needs two sizes or more (--sizes 200,800)", file=sys.stderr)
        return 2
    folders = {n: photo_corpus(n, args.image_size) for n in sizes}
    for engine in ("local", "ray"):  # untimed: the first run exports the ONNX towers, Ray caches the model
        cgroup_run(folders[sizes[0]], engine, args)
    load_before, started = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    runs: list[dict] = []
    for rnd in range(args.rounds):
        for n in sizes:
            for engine in ("local", "ray"):  # interleaved: a change in load hits both alike
                r = dict(cgroup_run(folders[n], engine, args), engine=engine, round=rnd, load1=os.getloadavg()[0])
                runs.append(r)
                left = f", {r['leftover']} process(es) left over" if r["leftover"] else ""
                print(
                    f"round {rnd + 1} {engine:5} {n:5} images: {r['cpu_s']:6.1f} CPU-s, wall {r['wall_s']:5.1f} s "
                    f"(load {r['load1']:.1f}{left})",
                    file=sys.stderr,
                    flush=True,
                )
    load_after = os.getloadavg()
    med = {
        (e, n, k): statistics.median(r[k] for r in runs if r["engine"] == e and r["n"] == n)
        for e in ("local", "ray")
        for n in sizes
        for k in ("cpu_s", "wall_s")
    }
    model = {(e, k): line({n: med[e, n, k] for n in sizes}) for e in ("local", "ray") for k in ("cpu_s", "wall_s")}
    cpu_even = break_even(model["local", "cpu_s"], model["ray", "cpu_s"])
    wall_even = break_even(model["local", "wall_s"], model["ray", "wall_s"])
    ratio = model["ray", "cpu_s"][1] / model["local", "cpu_s"][1]
    from bench.sysinfo import cpu_model, mem_total_gb

    print(
        f"{started}; {os.cpu_count()} cores ({cpu_model()}), {mem_total_gb():.0f} GB; {args.model} "
        f"({args.pretrained}), {args.image_size} photo-like JPEGs, sizes {', '.join(map(str, sizes))}, "
        f"{args.rounds} round(s), local and Ray (private, 127.0.0.1) interleaved; load average before "
        f"{load_before[0]:.1f}, after {load_after[0]:.1f}; each run in its own cpuacct cgroup (all its processes)"
    )
    print("| engine | CPU per image, marginal | fixed CPU per run | wall per image, marginal | fixed wall per run |")
    print("|---|---|---|---|---|")
    for e in ("local", "ray"):
        (fc, mc), (fw, mw) = model[e, "cpu_s"], model[e, "wall_s"]
        print(f"| {e} | {mc * 1000:.0f} CPU-ms | {fc:.1f} CPU-s | {mw * 1000:.0f} ms | {fw:.1f} s |")
    print()
    print("| engine | images | CPU-s (median; runs) | wall s (median; runs) |")
    print("|---|---|---|---|")
    for e in ("local", "ray"):
        for n in sizes:
            mine = [r for r in runs if r["engine"] == e and r["n"] == n]
            cpus = ", ".join(f"{r['cpu_s']:.1f}" for r in mine)
            walls = ", ".join(f"{r['wall_s']:.1f}" for r in mine)
            print(f"| {e} | {n} | {med[e, n, 'cpu_s']:.1f} ({cpus}) | {med[e, n, 'wall_s']:.1f} ({walls}) |")
    print(
        f"\nRay's marginal CPU per image: {ratio:.2f}x local (target <= 1.10x). Ray starts to pay from "
        f"{'never' if cpu_even is None else f'{cpu_even:,.0f}'} images per run in CPU and "
        f"{'never' if wall_even is None else f'{wall_even:,.0f}'} in wall time (where the lines cross)."
    )
    out = DATA / "ray-cgroup.json"
    out.write_text(
        json.dumps(
            {
                "started": started,
                "args": vars(args),
                "load_before": load_before,
                "load_after": load_after,
                "runs": runs,
                "model": {f"{e}/{k}": {"fixed": f, "marginal": m} for (e, k), (f, m) in model.items()},
                "marginal_cpu_ratio": ratio,
                "break_even_cpu": cpu_even,
                "break_even_wall": wall_even,
            },
            indent=1,
        )
    )
    print(f"(runs in {out})")
    return 0


def write_capacity(rows: int = 8192) -> str:
    """Rows per second the driver commits (``Store.write_images``: rows, vectors, keyword rows) at a few
    commit sizes: what bounds how many GPU workers one driver feeds (the indexer groups the batches that
    queue behind a running commit, up to 2,048 rows)."""
    import time

    import numpy as np

    from search.store.database import Store
    from search.store.schema import pack_vector, utcnow

    vec = pack_vector(np.random.default_rng(0).standard_normal(512).astype(np.float32))
    lines = ["| rows per commit | rows/s committed | GPUs fed at 3,000 img/s |", "|---|---|---|"]
    for size in (32, 256, 2048):
        folder = Path(tempfile.mkdtemp(prefix="glimpse-writes-"))
        store = Store(folder / "glimpse.db")
        try:
            root = store.ensure_root("/photos")
            t0 = time.perf_counter()
            for start in range(0, rows, size):
                batch = [
                    dict(
                        path=f"/photos/2024/trip/IMG_{i:07d}.jpg",
                        real_path=None,
                        root_id=root,
                        size=2_000_000,
                        mtime=1.7e9,
                        content_hash=f"{i:032x}",
                        indexed_at=utcnow(),
                        width=4032,
                        height=3024,
                        format="JPEG",
                        taken_at=None,
                        status="indexed",
                        error=None,
                        vector=vec,
                    )
                    for i in range(start, min(rows, start + size))
                ]
                with store.transaction() as s:
                    store.write_images(s, batch)
            rate = rows / (time.perf_counter() - t0)
        finally:
            store.close()
            shutil.rmtree(folder, ignore_errors=True)
        lines.append(f"| {size} | {rate:,.0f} | {rate / 3000:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
