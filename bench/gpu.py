#!/usr/bin/env python3
"""Glimpse on a CUDA GPU: encoder ceiling, decode rates, end-to-end `glimpse index`, FAISS GPU.

    python bench/gpu.py --check              # every GPU path checked, one table + JSON (bench/gpu_check.py)
    python bench/gpu.py --check --dry-run    # the same on the CPU at toy sizes (CI)
    python bench/gpu.py                      # the benchmark: ViT-B-32 and ViT-L-14, 12,000 JPEGs
    python bench/gpu.py --models ViT-B-32 --images 4000 --out gpu.md

Prints a markdown block (machine, versions, command, table) and writes it to --out;
append it to BENCHMARKS.md by hand (or with --append). Random weights (``--pretrained
none``): speed does not depend on the weight values.

Corpus: ``--base`` distinct photo-like JPEGs from bench/make_corpus.py (the "mixed"
phone-camera size profile, 1 to 12 MP), copied until there are ``--images`` files; each
copy gets its own JPEG comment segment, so every file has distinct bytes (the indexer
would otherwise reuse the vector of a byte-identical copy) and costs a full decode.

Sections are independent: one that fails is reported and the others still run; the
table is rewritten after each, so a run cut short still leaves its figures behind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.gpu_corpus import gpu_corpus  # noqa: E402
from bench.run import _log_time, dir_bytes, glimpse_cmd, run_timed  # noqa: E402
from bench.sysinfo import machine  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Table:
    def __init__(self, out: Path | None, header: str):
        self.rows: list[tuple[str, str, str]] = []
        self.out, self.header = out, header

    def add(self, metric: str, value: str, note: str = "") -> None:
        self.rows.append((metric, value, note))
        log(f"{metric}: {value}" + (f"  [{note}]" if note else ""))
        self.write()

    def markdown(self) -> str:
        lines = [self.header, "", "| metric | value | notes |", "|---|---|---|"]
        lines += [f"| {m} | {v} | {n} |" for m, v, n in self.rows]
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        if self.out:
            self.out.write_text(self.markdown())


# ---------------------------------------------------------------- corpus


# ---------------------------------------------------------------- sections


def section_encoder(t: Table, model: str, corpus: Path, batch: int) -> None:
    import numpy as np
    import torch

    from indexer.gpu_decode import decode_batch
    from indexer.load import default_workers, iter_batches
    from search.encoders.pil_steps import describe
    from search.encoders.torch_clip import Encoder, ModelSpec

    spec = ModelSpec.parse(model, "none")
    enc = Encoder(spec, device="cuda")  # fp16 autocast by default on CUDA
    x_host = torch.from_numpy(
        np.random.default_rng(0).integers(0, 256, (batch, enc.image_size, enc.image_size, 3), dtype=np.uint8)
    )
    for where, x in (("on the GPU", x_host.cuda()), ("from pinned host memory", x_host.pin_memory())):
        for _ in range(3):
            enc.encode_pixels(x)
        torch.cuda.synchronize()
        times = []
        for _ in range(15):
            t0 = time.perf_counter()
            enc.encode_pixels(x)  # returns numpy: includes the device sync and the copy back
            times.append(time.perf_counter() - t0)
        t.add(
            f"{model} encoder-only ceiling, fp16 autocast, input {where} (img/s, batch {batch}, median of 15)",
            f"{batch / statistics.median(times):,.0f}",
        )

    # fp16 vs fp32 on real images: how far the fast default moves the vectors.
    paths = sorted(str(p) for p in corpus.glob("*.jpg"))[:256]
    pix = torch.stack(
        [torch.as_tensor(b.pixels) for bt in iter_batches(paths, enc.pil_transform, enc.image_size, 64, 8) for b in bt]
    )
    v16 = enc.encode_pixels(pix)
    enc.precision = "fp32"
    v32 = enc.encode_pixels(pix)
    enc.encode_pixels(x_host.cuda())
    torch.cuda.synchronize()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        enc.encode_pixels(x_host.cuda())
        times.append(time.perf_counter() - t0)
    enc.precision = "fp16"
    cos = (v16 * v32).sum(axis=1)
    t.add(f"{model} fp32 (reference) ceiling (img/s, batch {batch})", f"{batch / statistics.median(times):,.0f}")
    t.add(
        f"{model} fp16 vs fp32 vectors, {len(cos)} corpus images (cosine min / mean)",
        f"{cos.min():.5f} / {cos.mean():.5f}",
    )

    # Decode + preprocess rates feeding it.
    many = sorted(str(p) for p in corpus.glob("*.jpg"))[:12000]
    w = default_workers(gpu=True)
    t0 = time.perf_counter()
    n = sum(len(bt) for bt in iter_batches(many, enc.pil_transform, enc.image_size, batch, w))
    t.add(
        f"CPU decode+preprocess (PIL draft mode), {w} worker processes (img/s, {n} JPEGs, incl. worker start)",
        f"{n / (time.perf_counter() - t0):,.0f}",
    )
    steps = describe(enc.pil_transform)
    datas = [torch.frombuffer(bytearray(Path(p).read_bytes()), dtype=torch.uint8) for p in many]
    decode_batch(datas[:batch], [None] * batch, steps, "cuda")  # warm-up: nvJPEG handles, allocator
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(0, len(datas), batch):
        chunk = datas[i : i + batch]
        out = decode_batch(chunk, [None] * len(chunk), steps, "cuda")
        assert not any(isinstance(o, Exception) for o in out)
    torch.cuda.synchronize()
    t.add(
        f"GPU decode+preprocess (nvJPEG + resize/crop on the GPU), bytes in memory (img/s, {len(datas)} JPEGs)",
        f"{len(datas) / (time.perf_counter() - t0):,.0f}",
    )
    w_raw = default_workers(gpu=True)
    t0 = time.perf_counter()
    n = sum(len(bt) for bt in iter_batches(many, enc.pil_transform, enc.image_size, batch, w_raw, raw_jpeg=True))
    t.add(
        f"raw-mode workers (read + probe, no decode), {w_raw} processes (img/s, {n} JPEGs)",
        f"{n / (time.perf_counter() - t0):,.0f}",
    )
    del enc
    torch.cuda.empty_cache()


def section_index(t: Table, model: str, corpus: Path, variant: str, data: Path, batch: int, extra: list[str]) -> None:
    """``variant``: a --decode mode, optionally with environment settings: "gpu:GLIMPSE_ENCODE_STREAMS=2"."""
    n = len(list(corpus.glob("*.jpg")))
    decode, *settings = variant.split(":")
    # GLIMPSE_OCR=off: the text reader runs on the CPU after publish; this measures embedding.
    env = dict(os.environ, GLIMPSE_OCR="off", **dict(kv.split("=", 1) for kv in settings))
    home = data / "homes" / f"gpu-{model}-{decode}"
    shutil.rmtree(home, ignore_errors=True)
    start = time.time()
    r = run_timed(
        glimpse_cmd(
            home,
            "-v",
            "index",
            str(corpus),
            "--model",
            model,
            "--pretrained",
            "none",
            "--device",
            "cuda",
            "--decode",
            decode,
            "--batch-size",
            str(batch),
            *extra,
        ),
        env=env,
    )
    if r["rc"] != 0:
        raise RuntimeError(f"glimpse index failed ({r['rc']}):\n{r['stderr'][-3000:]}")
    loaded = _log_time(r["stderr"], "loaded on")
    end = _log_time(r["stderr"], "published index version")
    phase = n / (end - loaded) if loaded and end else float("nan")
    stages = next((line.split("busy: ", 1)[1] for line in r["stderr"].splitlines() if "busy: " in line), "")
    t.add(
        f"{model} end-to-end `glimpse index --decode {decode}`{' ' + ' '.join(settings) if settings else ''}, "
        f"{n} JPEGs (img/s: embedding phase, model loaded → index published / whole command)",
        f"**{phase:,.0f}** / {n / r['wall_s']:,.0f}",
        f"wall {r['wall_s']:.1f}s, model loaded after {(loaded or start) - start:.1f}s; "
        f"peak memory of the process tree {r['peak_pss_mib']:,.0f} MiB PSS / {r['peak_rss_mib']:,.0f} MiB RSS; "
        f"{r['cpu_s'] / max(r['wall_s'], 1e-9):.1f} cores busy on average; stage busy time: {stages}",
    )
    db = sum(os.path.getsize(p) for p in home.glob("glimpse.db*"))
    cur = (home / "index" / "current").read_text().strip()
    t.add("  bytes per image on disk (DB + FAISS)", f"{(db + dir_bytes(home / 'index' / cur)) / n:,.0f}")


def section_faiss(t: Table, sizes: list[int], dim: int = 512) -> None:
    import faiss
    import numpy as np

    from search.vectors.live import gpu_available

    if not gpu_available():
        t.add(
            "FAISS GPU index",
            "not measured",
            f"faiss {faiss.__version__} here has no GPU support (StandardGpuResources: "
            f"{hasattr(faiss, 'StandardGpuResources')}); the CPU index serves",
        )
        return
    res = faiss.StandardGpuResources()
    rng = np.random.default_rng(0)
    for n in sizes:
        xb = rng.standard_normal((n, dim), dtype=np.float32)
        xb /= np.linalg.norm(xb, axis=1, keepdims=True)
        cpu = faiss.IndexFlatIP(dim)
        cpu.add(xb)
        gpu = faiss.index_cpu_to_gpu(res, 0, cpu)
        q = xb[:100] + 0.01
        lat = []
        for i in range(100):
            t0 = time.perf_counter()
            gpu.search(q[i : i + 1], 10)
            lat.append((time.perf_counter() - t0) * 1000)
        _, ig = gpu.search(q, 10)
        _, ic = cpu.search(q, 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ig, ic)])
        t.add(
            f"FAISS GPU flat, {n:,} vectors: one query (ms p50 / p95), recall@10 vs CPU exact",
            f"{statistics.median(lat):.2f} / {sorted(lat)[94]:.2f}, {recall:.3f}",
        )


# ---------------------------------------------------------------- main


def main(argv=None) -> int:
    if "--check" in (sys.argv[1:] if argv is None else argv):
        from bench.gpu_check import main as check

        return check(argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="check every GPU path instead (bench/gpu_check.py)")
    ap.add_argument("--models", default="ViT-B-32,ViT-L-14")
    ap.add_argument("--images", type=int, default=12000)
    ap.add_argument("--base", type=int, default=320, help="distinct generated JPEGs the corpus is copied from")
    ap.add_argument(
        "--profile",
        choices=["mixed", "fixed"],
        default="mixed",
        help="make_corpus size profile: mixed phone photos 1–12 MP, or all 1024×768",
    )
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument(
        "--decode",
        default="gpu,cpu",
        help="end-to-end variants for the first model: a --decode mode, optionally :VAR=value settings",
    )
    ap.add_argument("--faiss-sizes", default="100000,1000000")
    ap.add_argument("--only", default="encoder,index,faiss")
    ap.add_argument("--data", default=str(REPO / "bench-data"))
    ap.add_argument("--out", default=None, help="write the markdown block here too")
    ap.add_argument("--append", action="store_true", help="append the block to BENCHMARKS.md")
    args = ap.parse_args(argv)

    import torch
    import torchvision

    if not torch.cuda.is_available():
        print("bench/gpu.py needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    info = machine()
    gpu = torch.cuda.get_device_properties(0)
    header = (
        f"### GPU run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n"
        f"`python bench/gpu.py {' '.join(argv if argv is not None else sys.argv[1:])}`; "
        f"GPU {gpu.name} ({gpu.total_memory / 2**30:.0f} GiB), {info['cores']} CPU cores ({info['cpu']}), "
        f"{info['mem_gb']} GB RAM; torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"open_clip {info['open_clip_torch']}, faiss {info['faiss']}, Pillow {info['pillow']}, "
        f"Python {info['python']}, git {info['git']}"
    )
    t = Table(Path(args.out) if args.out else None, header)
    only = set(args.only.split(","))
    data = Path(args.data)
    models = [m for m in args.models.split(",") if m]
    corpus = None
    if only & {"encoder", "index"}:
        t0 = time.perf_counter()
        corpus = gpu_corpus(data, args.images, args.base, args.profile)
        mp = statistics.mean(_megapixels(p) for p in sorted(corpus.glob("*.jpg"))[: args.base])
        kind = "mixed 1–12 MP" if args.profile == "mixed" else "all 1024×768"
        t.add(
            "corpus",
            f"{args.images:,} JPEGs",
            f"{args.base} distinct, {kind} (mean {mp:.1f} MP), ready in {time.perf_counter() - t0:.0f}s",
        )
    for i, model in enumerate(models):
        if "encoder" in only:
            _guard(t, f"{model} encoder", section_encoder, t, model, corpus, args.batch_size)
        if "index" in only:
            for decode in args.decode.split(",") if i == 0 else ["gpu"]:
                _guard(
                    t,
                    f"{model} index --decode {decode}",
                    section_index,
                    t,
                    model,
                    corpus,
                    decode,
                    data,
                    args.batch_size,
                    [],
                )
    if "faiss" in only:
        _guard(t, "faiss", section_faiss, t, [int(s) for s in args.faiss_sizes.split(",") if s])
    md = t.markdown()
    print(md)
    if args.append:
        with open(REPO / "BENCHMARKS.md", "a") as f:
            f.write("\n" + md)
    return 0


def _megapixels(path: Path) -> float:
    from PIL import Image

    with Image.open(path) as im:
        return im.width * im.height / 1e6


def _guard(t: Table, name: str, fn, *a) -> None:
    try:
        fn(*a)
    except Exception as exc:  # noqa: BLE001 - report and go on with the other sections
        traceback.print_exc()
        t.add(f"{name}", "FAILED", f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300])


if __name__ == "__main__":
    sys.exit(main())
