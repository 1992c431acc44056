"""Every GPU path of Glimpse, checked by one command: ``python bench/gpu.py --check`` (this module).

    python bench/gpu.py --check                  # on a GPU machine: sets itself up, checks, prints, writes JSON
    python bench/gpu.py --check --dry-run        # the same checks on the CPU at toy sizes (CI: tests/test_gpu_check.py)
    python bench/gpu.py --check --wheels DIR     # offline: pip installs from DIR only
    python bench/gpu.py --check --system-torch   # keep the machine's own torch (a venv that sees it)

Setup, from the repository alone: a venv (``--venv``, default bench-data/gpu-check-venv) and
``pip install -c requirements.txt -e '.[gpu,ray]'``: Meta's faiss-gpu and its CUDA 12 wheels beside torch's
own, Ray, Glimpse; then the check runs again inside that venv. ``--no-setup`` (and ``--dry-run``) run in
the current interpreter as it is.

Checks, each a row of one table (status ``ok``, ``below target``, ``FAIL`` or ``skipped``), also written
as JSON (``--json``, default bench-data/gpu-check.json):

- ``faiss``: FAISS on the GPU gives the same top-10 as CPU FAISS on the same vectors, through Glimpse's own
  transfer (``search.vectors.loaded._to_gpu``); CAGRA's presence in the wheel is reported.
- ``encode``: ViT-B-32 (random weights) encoder-only throughput in fp16 autocast, and fp16 against fp32.
- ``nvjpeg``: nvJPEG decode + resize/crop on the GPU: rate, every file decoded, pixels against Pillow's.
- ``index``: `glimpse index` end to end, local on the GPU (nvJPEG decode) against the ≥ 5,000 img/s target;
  local with PIL decoding, and `--engine ray --gpus-per-worker 1` (one GPU worker on a private cluster) on
  the same files: the same rows and vectors as local, and its rate.
- ``search10m``: a 10M-vector IVF index on the GPU (CAGRA when the wheel has it: faiss-gpu 1.15.1 has not),
  the vectors of bench.publish_scale's 10M home (bench/synth.py's mixture): recall@10 against exact search
  and one-query latency for a few nprobe values; the target is ≤ 1 ms at recall@10 ≥ 0.95.

The exit code is 1 when a check FAILs (or, on a GPU, was skipped), else 0. A dry run checks that every
path runs, not the figures: the GPU steps run on the CPU at toy sizes (FAISS CPU against itself, a 50k
IVF, the small shipped model, 12 files, Ray on CPU workers).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHIPPED = f"local-dir:{REPO / 'models' / 'glimpse-icons-distil'}"
SUMMARY = re.compile(r"embedded (\d+) images in ([\d.]+)s")
INNER = "--inner"  # the second run, inside the venv the first one set up


@dataclass
class Row:
    check: str
    metric: str
    value: str
    target: str = ""
    status: str = "ok"  # ok | below target | FAIL | skipped | info
    note: str = ""
    data: dict = field(default_factory=dict)


class Report:
    def __init__(self, args):
        self.args, self.rows = args, []
        self.started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        self.t0 = time.perf_counter()
        self.meta: dict = {}
        self.cache: dict = {}  # what checks share (the encoder)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(f"[{time.strftime('%H:%M:%S')}] {row.check}: {row.metric} = {row.value} [{row.status}]", file=sys.stderr)
        self.write()

    def failed(self) -> bool:
        bad = {"FAIL"} | (set() if self.args.dry_run else {"skipped"})
        return any(r.status in bad for r in self.rows)

    def table(self) -> str:
        lines = ["| check | metric | value | target | status | notes |", "|---|---|---|---|---|---|"]
        lines += [f"| {r.check} | {r.metric} | {r.value} | {r.target} | {r.status} | {r.note} |" for r in self.rows]
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        out = {
            "started": self.started,
            "mode": "dry-run (CPU)" if self.args.dry_run else "gpu",
            "seconds": round(time.perf_counter() - self.t0, 1),
            **self.meta,
            "rows": [asdict(r) for r in self.rows],
            "ok": not self.failed(),
        }
        path = Path(self.args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1, default=str))


def guard(rep: Report, check: str, fn, *a) -> None:
    """One check: an exception becomes its FAIL row, and the others still run."""
    try:
        fn(rep, *a)
    except Exception as exc:  # noqa: BLE001 - report and go on
        traceback.print_exc()
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        rep.add(Row(check, "ran", "error", status="FAIL", note=f"{exc.__class__.__name__}: {first}"))


# ---------------------------------------------------------------- setup


def setup_and_rerun(args, argv: list[str]) -> int:
    """A venv with the gpu and ray extras, from this repository alone; then this check again inside it."""
    venv = Path(args.venv)
    py = venv / "bin" / "python"
    t0 = time.perf_counter()
    steps: list[list[str]] = []
    if not py.exists():
        steps.append(
            [sys.executable, "-m", "venv", *(["--system-site-packages"] if args.system_torch else []), str(venv)]
        )
    pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check"]
    if args.wheels:
        pip += ["--no-index", "--find-links", str(Path(args.wheels).resolve())]
    constraints = venv / "constraints.txt"
    pip += ["-c", str(constraints), "-e", f"{REPO}[gpu,ray]"]
    steps.append(pip)
    venv.mkdir(parents=True, exist_ok=True)
    for cmd in steps:
        if cmd is pip:
            # requirements.txt's pins, as constraints (they install nothing by themselves: faiss-cpu stays out);
            # --system-torch keeps the machine's torch and torchvision instead of the pinned builds.
            keep = [
                line
                for line in (REPO / "requirements.txt").read_text().splitlines()
                if not (args.system_torch and re.match(r"\s*(torch|torchvision)\b", line))
            ]
            constraints.write_text("\n".join(keep) + "\n")
        print("setup: " + " ".join(cmd), file=sys.stderr, flush=True)
        if subprocess.run(cmd, cwd=REPO).returncode != 0:
            print(f"setup failed: {' '.join(cmd)}", file=sys.stderr)
            return 1
    setup_s = time.perf_counter() - t0
    inner = [str(py), str(REPO / "bench" / "gpu.py"), *argv, INNER, f"--setup-seconds={setup_s:.1f}"]
    return subprocess.run(inner, cwd=REPO).returncode


def versions() -> dict:
    from importlib import metadata

    def v(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "-"

    names = ["torch", "torchvision", "faiss-gpu", "faiss-cpu", "ray", "open_clip_torch", "numpy", "onnxruntime"]
    names += ["nvidia-cuda-runtime-cu12", "nvidia-cublas-cu12", "nvidia-curand-cu12", "nvidia-cuda-runtime"]
    return {n: v(n) for n in names}


def check_stack(rep: Report) -> None:
    """One FAISS build, the GPU one, importable beside torch (torch first, as `glimpse index` imports them)."""
    import torch  # its CUDA 13 libraries load first, as in the indexer

    vs = rep.meta["versions"]
    if not rep.args.dry_run and vs["faiss-cpu"] != "-":
        rep.add(
            Row(
                "stack",
                "FAISS wheels",
                f"faiss-gpu {vs['faiss-gpu']} and faiss-cpu {vs['faiss-cpu']}",
                "faiss-gpu alone",
                "FAIL",
                "both write the package faiss: pip uninstall -y faiss-cpu faiss-gpu && pip install -e '.[gpu]'",
            )
        )
    import faiss

    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    gpu_build = hasattr(faiss, "StandardGpuResources")
    ok = rep.args.dry_run or (gpu_build and gpus > 0)
    rep.add(
        Row(
            "stack",
            "faiss imports beside torch",
            f"faiss {faiss.__version__}, GPU build {gpu_build}, get_num_gpus() {gpus}, "
            f"torch {torch.__version__} cuda {torch.version.cuda} available {torch.cuda.is_available()}",
            "GPU build, ≥ 1 GPU",
            "ok" if ok else "FAIL",
            "dry run: the CPU build" if rep.args.dry_run else "",
        )
    )


# ---------------------------------------------------------------- checks


def check_faiss(rep: Report) -> None:
    import faiss
    import numpy as np

    from bench.synth import Mixture
    from search.vectors.loaded import gpu_available

    n, dim, nq = (5_000, 512, 50) if rep.args.dry_run else (1_000_000, 512, 1_000)
    xb = Mixture.for_home(7, 4000, n, 50).draw(n, 0).astype(np.float32)
    xq = Mixture.for_home(7, 4000, n, 50).draw(nq, 1).astype(np.float32)
    cpu = faiss.IndexFlatIP(dim)
    cpu.add(xb)
    _, want = cpu.search(xq, 10)
    if rep.args.dry_run:
        other, where = faiss.clone_index(cpu), "CPU (dry run: a clone, the GPU transfer is not exercised)"
    else:
        if not gpu_available():
            rep.add(Row("faiss", "GPU index", "no GPU FAISS", status="FAIL", note="faiss.get_num_gpus() is 0"))
            return
        from search.vectors.loaded import _to_gpu

        other, where = _to_gpu(cpu), "GPU (Glimpse's own transfer)"
        if not type(other).__name__.startswith("Gpu"):
            rep.add(Row("faiss", "GPU index", type(other).__name__, status="FAIL", note="the transfer stayed on CPU"))
            return
    t0 = time.perf_counter()
    _, got = other.search(xq, 10)
    batch_ms = (time.perf_counter() - t0) * 1000
    same = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(want, got)]))
    rep.add(
        Row(
            "faiss",
            f"top-10 on {type(other).__name__} vs CPU IndexFlatIP ({n:,} vectors, {nq} queries)",
            f"{same:.4f} agreement",
            "1.0 (≥ 0.999: ties)",
            "ok" if same >= 0.999 else "FAIL",
            f"{where}; {nq} queries in {batch_ms:.1f} ms",
            {"agreement": same, "n": n},
        )
    )
    rep.add(
        Row(
            "faiss",
            "CAGRA in this wheel",
            str(hasattr(faiss, "GpuIndexCagra")),
            status="info",
            note="faiss-gpu has IVF on the GPU; CAGRA needs the cuVS build (faiss-gpu-cuvs)",
        )
    )


def _encoder(rep: Report):
    """The check's encoder, opened once: ViT-B-32 (random weights) on the GPU; in a dry run the small
    shipped model in torch on the CPU (the torch path, as on a GPU; on a CPU Glimpse takes ONNX)."""
    if "encoder" not in rep.cache:
        from search.encoders.model_spec import ModelSpec
        from search.encoders.torch_clip import Encoder

        if rep.args.dry_run:
            enc = Encoder(ModelSpec.parse(SHIPPED), device="cpu", runtime="torch")
            rep.cache["encoder"] = enc, "the shipped model (dry run)"
        else:
            rep.cache["encoder"] = Encoder(ModelSpec.parse("ViT-B-32", "none"), device="cuda"), "ViT-B-32"
    return rep.cache["encoder"]


def check_encode(rep: Report) -> None:
    import numpy as np
    import torch

    enc, name = _encoder(rep)
    batch, reps = (8, 3) if rep.args.dry_run else (256, 15)
    x = torch.from_numpy(
        np.random.default_rng(0).integers(0, 256, (batch, enc.image_size, enc.image_size, 3), dtype=np.uint8)
    )
    if enc.device.startswith("cuda"):
        x = x.cuda()

    def rate() -> float:
        for _ in range(2):
            enc.encode_pixels(x)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            enc.encode_pixels(x)  # numpy back: includes the sync and the copy to the host
            times.append(time.perf_counter() - t0)
        return batch / statistics.median(times)

    fast = rate()
    v_fast = enc.encode_pixels(x)
    precision = enc.precision
    enc.precision = "fp32"
    v32 = enc.encode_pixels(x)
    ref = fast if precision == "fp32" else rate()
    enc.precision = precision
    cos = (v_fast * v32).sum(axis=1)
    rep.add(
        Row(
            "encode",
            f"{name} encoder-only, {precision}, batch {batch} (img/s, median of {reps})",
            f"{fast:,.0f}",
            note=f"fp32 {ref:,.0f} img/s",
            data={"img_s": fast, "fp32_img_s": ref},
        )
    )
    rep.add(
        Row(
            "encode",
            f"{precision} vs fp32 vectors, {batch} random images (cosine min)",
            f"{cos.min():.5f}",
            "≥ 0.999",
            "ok" if cos.min() >= 0.999 else "FAIL",
        )
    )


def make_corpus(rep: Report) -> Path:
    from bench.gpu_corpus import gpu_corpus

    n, base = (12, 4) if rep.args.dry_run else (rep.args.images, 256)
    return gpu_corpus(Path(rep.args.data), n, base, "fixed")


def check_nvjpeg(rep: Report, corpus: Path) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from indexer.gpu_decode import decode_batch, gpu_jpeg_available
    from search.encoders.pil_steps import apply, describe

    enc, _ = _encoder(rep)
    device = "cpu" if rep.args.dry_run else "cuda"
    if not rep.args.dry_run and not gpu_jpeg_available(device):
        rep.add(Row("nvjpeg", "decoder", "unavailable", status="FAIL", note="torchvision has no nvJPEG here"))
        return
    steps = describe(enc.pil_transform)
    paths = sorted(corpus.glob("*.jpg"))[: (12 if rep.args.dry_run else 4096)]
    datas = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in paths]
    batch = 256
    decode_batch(datas[:batch], [None] * len(datas[:batch]), steps, device)  # warm-up: handles, allocator
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out: list = []
    for i in range(0, len(datas), batch):
        out += decode_batch(datas[i : i + batch], [None] * len(datas[i : i + batch]), steps, device)
    if device == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    errors = [o for o in out if isinstance(o, Exception)]
    diffs = []
    for p, o in list(zip(paths, out))[:16]:
        if isinstance(o, Exception):
            continue
        with Image.open(p) as im:
            want = np.asarray(apply(steps, im.convert("RGB"))).astype(int)
        diffs.append(float(np.abs(o.cpu().numpy().astype(int) - want).mean()))
    worst = max(diffs) if diffs else float("nan")
    what = "nvJPEG" if device == "cuda" else "torchvision on the CPU (dry run)"
    rep.add(
        Row(
            "nvjpeg",
            f"{what} decode + resize/crop, {len(datas):,} 1024×768 JPEGs from memory (img/s)",
            f"{len(datas) / secs:,.0f}",
            note=f"{len(errors)} failed",
            status="ok" if not errors else "FAIL",
            data={"img_s": len(datas) / secs, "failed": len(errors)},
        )
    )
    rep.add(
        Row(
            "nvjpeg",
            "pixels against Pillow's full decode + the same resize/crop (mean |diff|, worst of 16 files)",
            f"{worst:.2f} grey levels",
            "≤ 2",
            "ok" if worst <= 2 else "FAIL",
        )
    )


def _index(rep: Report, home: Path, pics: Path, *extra: str, env: dict | None = None) -> dict:
    shutil.rmtree(home, ignore_errors=True)
    model = ["--model", SHIPPED] if rep.args.dry_run else ["--model", "ViT-B-32", "--pretrained", "none"]
    cmd = [sys.executable, "-m", "glimpse.cli", "--home", str(home), "-v", "index", str(pics), *model, *extra]
    # GLIMPSE_OCR=off: the text reader runs after publish, on the CPU; the check is about embedding.
    e = dict(os.environ, HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0", GLIMPSE_OCR="off", **(env or {}))
    t0 = time.perf_counter()
    try:  # a Ray actor asking for a GPU the cluster did not find would wait forever
        r = subprocess.run(cmd, cwd=REPO, env=e, capture_output=True, text=True, timeout=rep.args.index_timeout)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"glimpse index {' '.join(extra)} did not finish in {exc.timeout:.0f} s") from None
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"glimpse index {' '.join(extra)} exited {r.returncode}: {r.stderr[-1500:]}")
    m = SUMMARY.search(r.stderr)
    if not m:
        raise RuntimeError(f"no summary line in the log of glimpse index {' '.join(extra)}")
    n, embed_s = int(m.group(1)), float(m.group(2))
    return {"n": n, "embed_s": embed_s, "wall_s": wall, "log": r.stderr}


def _rows(home: Path) -> dict[str, tuple]:
    import numpy as np

    with sqlite3.connect(home / "glimpse.db") as db:
        got = db.execute("select path, status, content_hash, width, height, vector from images").fetchall()
    return {
        p: (s, h, w, ht, None if v is None else np.frombuffer(v, np.float16).astype(np.float32))
        for p, s, h, w, ht, v in got
    }


def check_index(rep: Report, corpus: Path) -> None:
    import numpy as np

    data = Path(rep.args.data)
    device = [] if rep.args.dry_run else ["--device", "cuda", "--batch-size", "256"]
    # Local on the GPU with nvJPEG: the end-to-end figure.
    if not rep.args.dry_run:
        gpu = _index(rep, data / "check-homes" / "local-gpu", corpus, *device, "--decode", "gpu")
        rate = gpu["n"] / gpu["embed_s"]
        rep.add(
            Row(
                "index",
                f"ViT-B-32 `glimpse index --decode gpu`, {gpu['n']:,} 1024×768 JPEGs "
                "(img/s: embedding / whole command)",
                f"{rate:,.0f} / {gpu['n'] / gpu['wall_s']:,.0f}",
                "≥ 5,000",
                "ok" if rate >= 5000 else "below target",
                f"whole command {gpu['wall_s']:.1f} s",
                {"img_s": rate, "wall_s": gpu["wall_s"]},
            )
        )
    # Ray with one GPU worker against local with the same (PIL) decoding, on a subset: one worker decodes alone.
    n_ray = 12 if rep.args.dry_run else rep.args.ray_images
    sub = data / f"check-ray-corpus-{n_ray}"
    if len(list(sub.glob("*.jpg"))) != n_ray:
        shutil.rmtree(sub, ignore_errors=True)
        sub.mkdir(parents=True)
        for p in sorted(corpus.glob("*.jpg"))[:n_ray]:
            os.link(p, sub / p.name)
    one = ["--workers", "1"] if rep.args.dry_run else []  # a dry run: fewer processes to start
    local = _index(rep, data / "check-homes" / "local-pil", sub, *device, *one, "--decode", "cpu")
    try:
        import ray  # noqa: F401
    except ImportError:
        rep.add(Row("index", "--engine ray", "not installed", status="skipped", note='pip install -e ".[ray]"'))
        return
    gpus = ["--workers", "1"] if rep.args.dry_run else ["--gpus-per-worker", "1", "--workers", "1"]
    ray_run = _index(
        rep,
        data / "check-homes" / "ray",
        sub,
        *device,
        "--engine",
        "ray",
        *gpus,
        env={"RAY_ADDRESS": "", "GLIMPSE_RAY_MIN_FILES": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
    )
    a, b = _rows(data / "check-homes" / "local-pil"), _rows(data / "check-homes" / "ray")
    same_rows = sorted(a) == sorted(b) and all(a[p][:4] == b[p][:4] for p in a)
    cos = [
        float(np.dot(a[p][4], b[p][4]) / (np.linalg.norm(a[p][4]) * np.linalg.norm(b[p][4])))
        for p in a
        if p in b and a[p][4] is not None and b[p][4] is not None
    ]
    lo = min(cos) if cos else float("nan")
    worker = "one GPU worker" if not rep.args.dry_run else "CPU workers (dry run)"
    rep.add(
        Row(
            "index",
            f"`--engine ray`, {worker}, against local (PIL decode), {n_ray:,} files: rows equal, vector cosine min",
            f"{same_rows}, {lo:.5f}",
            "True, ≥ 0.999",
            "ok" if same_rows and lo >= 0.999 and len(cos) == n_ray else "FAIL",
            f"embedding img/s: ray {ray_run['n'] / ray_run['embed_s']:,.0f} (cluster start included), "
            f"local {local['n'] / local['embed_s']:,.0f}; whole command {ray_run['wall_s']:.0f} s vs "
            f"{local['wall_s']:.0f} s",
            {
                "ray_img_s": ray_run["n"] / ray_run["embed_s"],
                "local_img_s": local["n"] / local["embed_s"],
                "cosine_min": lo,
            },
        )
    )


def _vectors(n: int, dim: int, mixture: tuple):
    """``n`` vectors of the 10M home's mixture (bench/synth.py), drawn by threads in its streams of 100k
    (numpy's generators fill arrays without the GIL), into one float32 array."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from bench.synth import Mixture

    m = Mixture.for_home(*mixture)
    xb = np.empty((n, dim), np.float32)

    def block(start: int) -> None:
        stop = min(n, start + 100_000)
        xb[start:stop] = m.draw(stop - start, start // 100_000)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(block, range(0, n, 100_000)))
    return xb


def check_search10m(rep: Report) -> None:
    import faiss
    import numpy as np

    from bench.synth import Mixture

    dry = rep.args.dry_run
    n = 50_000 if dry else rep.args.vectors
    dim, nq = 512, (50 if dry else 1_000)
    nlist = 256 if dry else 16_384
    mixture = (11, 4000, n, 50)  # bench.publish_scale's home: 4,000 subjects, a scene per 50 points
    t0 = time.perf_counter()
    xb = _vectors(n, dim, mixture)
    xq = Mixture.for_home(*mixture).draw(nq, 10_000_000).astype(np.float32)  # a stream no row came from
    made_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    truth = _exact_top10(xb, xq, on_gpu=not dry)  # the exact top-10, in chunks
    truth_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    quantizer = faiss.IndexFlatIP(dim)
    cpu_index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    res = None
    if dry:
        index, where = cpu_index, "CPU IndexIVFFlat (dry run)"
    else:
        res = faiss.StandardGpuResources()  # kept alive as long as the index
        index = faiss.index_cpu_to_gpu(res, 0, cpu_index)
        where = type(index).__name__
    index.train(xb[np.random.default_rng(0).choice(n, min(n, nlist * 40), replace=False)])
    for s in range(0, n, 1_000_000):
        index.add(xb[s : s + 1_000_000])
    build_s = time.perf_counter() - t0
    del xb
    results = []
    for nprobe in (8, 16, 32, 64) if not dry else (1, 4, 16):
        if dry:
            index.nprobe = nprobe
        else:
            faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", nprobe)
        _, got = index.search(xq, 10)
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, got)]))
        lat = []
        for i in range(min(nq, 200)):
            t1 = time.perf_counter()
            index.search(xq[i : i + 1], 10)
            lat.append((time.perf_counter() - t1) * 1000)
        lat.sort()
        results.append(
            {"nprobe": nprobe, "recall10": recall, "p50_ms": lat[len(lat) // 2], "p95_ms": lat[-len(lat) // 20]}
        )
    good = [r for r in results if r["recall10"] >= 0.95]
    best = min(good, key=lambda r: r["p50_ms"]) if good else max(results, key=lambda r: r["recall10"])
    met = bool(good) and best["p50_ms"] <= 1.0
    sweep = "; ".join(f"nprobe {r['nprobe']}: {r['recall10']:.3f} at {r['p50_ms']:.2f} ms" for r in results)
    rep.add(
        Row(
            "search10m",
            f"{where} (nlist {nlist:,}), {n:,} vectors of the 10M home's mixture: recall@10, one query p50 / p95",
            f"{best['recall10']:.3f}, {best['p50_ms']:.2f} / {best['p95_ms']:.2f} ms (nprobe {best['nprobe']})",
            "≥ 0.95 at ≤ 1 ms",
            "ok" if met or dry else "below target",
            f"{sweep}; vectors made in {made_s:.0f} s, exact truth {truth_s:.0f} s, train + add {build_s:.0f} s",
            {"sweep": results, "n": n, "nlist": nlist},
        )
    )


def _exact_top10(xb, xq, on_gpu: bool):
    import numpy as np

    if not on_gpu:
        import faiss

        flat = faiss.IndexFlatIP(xb.shape[1])
        flat.add(xb)
        return flat.search(xq, 10)[1]
    import torch

    q = torch.from_numpy(xq).cuda()
    best_s = torch.full((len(xq), 10), -1e9, device="cuda")
    best_i = torch.zeros((len(xq), 10), dtype=torch.int64, device="cuda")
    for s in range(0, len(xb), 500_000):
        chunk = torch.from_numpy(xb[s : s + 500_000]).cuda()
        sims = q @ chunk.T
        v, i = sims.topk(10, dim=1)
        allv, alli = torch.cat([best_s, v], 1), torch.cat([best_i, i + s], 1)
        top = allv.topk(10, dim=1)
        best_s, best_i = top.values, alli.gather(1, top.indices)
        del chunk, sims
    return best_i.cpu().numpy().astype(np.int64)


# ---------------------------------------------------------------- main

CHECKS = ("faiss", "encode", "nvjpeg", "index", "search10m")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(
        prog="bench/gpu.py --check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--check", action="store_true", help="this check (bench/gpu.py without it: the benchmark)")
    ap.add_argument("--dry-run", action="store_true", help="on the CPU at toy sizes, in this interpreter (CI)")
    ap.add_argument("--only", default=",".join(CHECKS), help=f"some of {','.join(CHECKS)}")
    ap.add_argument("--images", type=int, default=12_000, help="JPEGs for the end-to-end and nvJPEG checks")
    ap.add_argument("--ray-images", type=int, default=2_000, help="of them, for the Ray-against-local check")
    ap.add_argument("--vectors", type=int, default=10_000_000, help="the GPU search check's index size")
    ap.add_argument("--index-timeout", type=float, default=300, help="seconds for each `glimpse index` run")
    ap.add_argument("--data", default=str(REPO / "bench-data" / "gpu-check"), help="corpora and homes")
    ap.add_argument("--json", default=None, help="results (default DATA/gpu-check.json)")
    ap.add_argument("--venv", default=str(REPO / "bench-data" / "gpu-check-venv"))
    ap.add_argument("--wheels", default=None, help="install from this folder only (no index)")
    ap.add_argument("--system-torch", action="store_true", help="a venv that sees the machine's torch")
    ap.add_argument("--no-setup", action="store_true", help="run in this interpreter as it is")
    ap.add_argument(INNER, action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--setup-seconds", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.json = args.json or str(Path(args.data) / "gpu-check.json")
    if not (args.dry_run or args.no_setup or args.inner):
        return setup_and_rerun(args, argv)

    rep = Report(args)
    from bench.sysinfo import machine

    rep.meta = {"command": "python bench/gpu.py " + " ".join(a for a in argv if a != INNER), "machine": machine()}
    rep.meta["versions"] = versions()
    if args.setup_seconds is not None:
        rep.meta["setup_seconds"] = args.setup_seconds
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print(
            "bench/gpu.py --check needs a CUDA GPU (torch.cuda.is_available() is False); --dry-run runs it on the CPU"
        )
        return 2
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        rep.meta["gpu"] = f"{p.name} ({p.total_memory / 2**30:.0f} GiB)"
    only = set(args.only.split(","))
    guard(rep, "stack", check_stack)
    if "faiss" in only:
        guard(rep, "faiss", check_faiss)
    if "encode" in only:
        guard(rep, "encode", check_encode)
    if only & {"nvjpeg", "index"}:
        corpus = make_corpus(rep)
        if "nvjpeg" in only:
            guard(rep, "nvjpeg", check_nvjpeg, corpus)
        if "index" in only:
            guard(rep, "index", check_index, corpus)
    if "search10m" in only:
        guard(rep, "search10m", check_search10m)
    rep.write()
    took = time.perf_counter() - rep.t0
    setup = f", setup {args.setup_seconds:.0f} s" if args.setup_seconds is not None else ""
    where = rep.meta.get("gpu", "no GPU: dry run on the CPU")
    print(f"\n### `{rep.meta['command']}`: {where}, {took:.0f} s{setup}\n")
    print(rep.table())
    print(f"JSON: {args.json}; {'FAILED' if rep.failed() else 'passed'}")
    return 1 if rep.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
