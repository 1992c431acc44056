#!/usr/bin/env python3
"""Glimpse speed benchmark: one command, one table, appended to BENCHMARKS.md.

    python bench/run.py            # full run (about half an hour on 2 CPU cores)
    python bench/run.py --quick    # small sizes, a few minutes: smoke test of the script
    python bench/run.py --only encoder,index --no-write

Sections (``--only`` takes a comma list):
  encoder  encoder-only ceiling (img/s on preprocessed uint8 tensors, batch 32),
           text-encoder latency, decode+preprocess rate of the DataLoader workers
  index    end-to-end ``glimpse index`` on the JPEG corpus (subprocess, fresh home):
           img/s, ratio to the ceiling, peak memory, bytes per image on disk
  reindex  no-op ``glimpse reindex`` over 100k tiny files already in the store
  query    ``glimpse serve`` on synthetic homes of 10k / 100k / 1M vectors: time to
           ready, text and image query latency p50/p95 through the HTTP API,
           server memory, recall@10 of the chosen index type vs exact search
  peers    rclip and clip-retrieval on the same corpus and architecture (bench/peers.py)

Everything it makes lives under ``bench-data/`` (gitignored). Timed sections
pause a background ``training`` job if one runs (SIGSTOP/SIGCONT, always
resumed) and record the load average and the CPU other processes used.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# glimpse_cmd and run_timed are also imported from here by bench/gpu.py and bench/ray_overhead.py.
from bench.harness import MODEL, PRETRAINED, cond_str, ensure_query_bundle, glimpse_cmd, run_timed  # noqa: E402
from bench.memwatch import TreeWatch  # noqa: E402
from bench.sysinfo import loadavg, machine, quiet_machine  # noqa: E402

DATA = REPO / "bench-data"
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


class Results:
    def __init__(self):
        self.rows: list[tuple[str, str, str, str]] = []  # metric, value, target, conditions
        self.raw: dict = {}

    def add(self, metric: str, value: str, target: str = "", cond: str = "") -> None:
        self.rows.append((metric, value, target, cond))
        log(f"{metric}: {value}" + (f"  (target {target})" if target else "") + (f"  [{cond}]" if cond else ""))


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def corpus(n: int) -> Path:
    out = DATA / f"corpus{n // 1000}k" if n % 1000 == 0 else DATA / f"corpus{n}"
    have = len(list(out.glob("*.jpg"))) if out.exists() else 0
    bigger = DATA / "corpus1k"
    if have < n and n < 1000 and len(list(bigger.glob("*.jpg"))) >= 1000:
        # make_corpus is deterministic per (seed, index): the first n of a bigger corpus are the same bytes
        out.mkdir(parents=True, exist_ok=True)
        for p in sorted(bigger.glob("*.jpg"))[:n]:
            shutil.copy2(p, out / p.name)
        have = n
    if have < n:
        log(f"generating {n - have} corpus images in {out} (bench/make_corpus.py, deterministic)")
        subprocess.run(
            [
                sys.executable,
                str(REPO / "bench" / "make_corpus.py"),
                str(out),
                "-n",
                str(n - have),
                "--start",
                str(have),
            ],
            check=True,
        )
    return out


# ---------------------------------------------------------------- sections


def section_encoder(res: Results, args, corpus_dir: Path) -> None:
    import numpy as np
    import torch

    from indexer.load import default_workers, iter_batches
    from search.encoders.torch_clip import Encoder, ModelSpec

    t0 = time.perf_counter()
    enc = Encoder(ModelSpec.parse(MODEL, PRETRAINED), device="cpu")
    load_s = time.perf_counter() - t0
    bs = 32
    x = torch.from_numpy(
        np.random.default_rng(0).integers(0, 256, (bs, enc.image_size, enc.image_size, 3), dtype=np.uint8)
    )
    enc.encode_pixels(x)  # auto runtime: the first full batch starts ONNX Runtime, as in `glimpse index`
    backend = getattr(enc, "backend", "torch")
    res.raw["encoder_backend"] = backend
    ort = getattr(enc, "_ort", None)
    # The ceiling `glimpse index` is held to is the runtime it uses (auto: ONNX Runtime on CPU);
    # torch is measured too, for reference (the same Encoder with its ONNX tower switched off).
    for runtime in [backend, "torch"] if backend != "torch" else ["torch"]:
        enc._ort = ort if runtime != "torch" else None
        enc.encode_pixels(x)  # warm-up
        note: dict = {}
        with quiet_machine(note):
            times = []
            c0 = time.process_time()
            for _ in range(args.ceiling_batches):
                t = time.perf_counter()
                enc.encode_pixels(x)
                times.append(time.perf_counter() - t)
            cpu_per_img = (time.process_time() - c0) / (bs * len(times))
        rate = bs / statistics.median(times)
        res.raw[f"ceiling_img_s_{runtime}"] = rate
        res.raw[f"ceiling_cpu_ms_{runtime}"] = cpu_per_img * 1000
        if runtime == backend:
            res.raw["ceiling_img_s"] = rate
            res.raw["ceiling_cpu_ms"] = cpu_per_img * 1000
        res.add(
            f"encoder-only ceiling, {MODEL} fp32, {runtime}{' (used by glimpse index)' if runtime == backend else ''} "
            f"(img/s on preprocessed uint8 tensors, batch {bs}, median of {len(times)})",
            f"{rate:.2f}",
            "",
            cond_str(note) + f", {torch.get_num_threads()} threads, {cpu_per_img * 1000:.0f} CPU-ms/img",
        )
    enc._ort = ort
    if backend == "onnx":
        _ceiling_as_indexed(res, args, x.numpy())

    if backend == "onnx" and not args.no_int8:
        # Opt-in int8 image tower (GLIMPSE_QUANTIZE=int8): speed, and how far its vectors are from fp32.
        t0 = time.perf_counter()
        q = Encoder(ModelSpec.parse(MODEL, PRETRAINED), device="cpu", quantize="int8")
        qload = time.perf_counter() - t0
        q.encode_pixels(x)
        note = {}
        with quiet_machine(note):
            times = []
            for _ in range(args.ceiling_batches):
                t = time.perf_counter()
                q.encode_pixels(x)
                times.append(time.perf_counter() - t)
        rate = bs / statistics.median(times)
        real = sorted(str(p) for p in corpus_dir.glob("*.jpg"))[:bs]
        pix = torch.stack(
            [
                torch.as_tensor(b.pixels)
                for batch in iter_batches(real, enc.pil_transform, enc.image_size, bs, 0)
                for b in batch
            ]
        )
        cos = (q.encode_pixels(pix) * enc.encode_pixels(pix)).sum(axis=1)
        res.raw.update(ceiling_img_s_int8=rate, int8_cos_min=float(cos.min()))
        res.add(
            f"encoder-only ceiling, ONNX Runtime int8 (opt-in GLIMPSE_QUANTIZE=int8) (img/s, batch {bs})",
            f"{rate:.2f}",
            "",
            cond_str(note) + f"; cosine to fp32 on {len(cos)} corpus images: "
            f"min {cos.min():.4f}, mean {cos.mean():.4f}; load incl. one-time quantization {qload:.0f}s",
        )
        del q

    texts = [
        f"a photo of a {w} at the {p}"
        for w in ("dog", "cat", "car", "tree", "child", "boat", "house", "bird")
        for p in ("beach", "park", "city", "lake")
    ]
    # The server queries through the ONNX bundle (search.encoders.onnx_bundle) when it has one; torch for reference.
    from search.encoders.onnx_bundle import OnnxQueryEncoder, ensure_bundle

    t0 = time.perf_counter()
    bundle = ensure_bundle(enc)
    res.raw["bundle_build_s"] = time.perf_counter() - t0
    qenc = OnnxQueryEncoder(bundle)
    for name, e in (("onnx (used by glimpse serve)", qenc), ("torch", enc)):
        e.encode_texts(["warm"])
        note = {}
        with quiet_machine(note):
            tt = []
            for t in texts:
                t0 = time.perf_counter()
                e.encode_texts([t])
                tt.append((time.perf_counter() - t0) * 1000)
        if e is qenc:
            res.raw["text_encode_ms"] = statistics.median(tt)
        res.raw[f"text_encode_ms_{name.split()[0]}"] = statistics.median(tt)
        res.add(f"text encoder, one query, {name} (ms, p50)", f"{statistics.median(tt):.1f}", "", cond_str(note))
    del qenc

    paths = sorted(str(p) for p in corpus_dir.glob("*.jpg"))[: args.decode_images]
    for workers in sorted({default_workers(), 1}):
        note = {}
        with quiet_machine(note):
            t0 = time.perf_counter()
            n = sum(len(b) for b in iter_batches(paths, enc.pil_transform, enc.image_size, bs, workers))
            dt_ = time.perf_counter() - t0
        res.raw[f"decode_img_s_w{workers}"] = n / dt_
        res.add(
            f"decode+preprocess, {workers} worker process(es) (img/s, {n} JPEGs, incl. worker start)",
            f"{n / dt_:.1f}",
            "",
            cond_str(note),
        )
    res.raw["model_load_s"] = load_s
    del enc


_TS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")


def _log_time(stderr: str, needle: str) -> float | None:
    for line in stderr.splitlines():
        if needle in line:
            m = _TS.match(line)
            if m:
                return dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def _ceiling_as_indexed(res: Results, args, x) -> None:
    """The encoder alone as `glimpse index` runs it on CPU: the torch-free bundle, one single-threaded
    call per stream, each on its own batch. The ceiling is the faster of this and one call using all
    threads, so the end-to-end ratio is never taken against a slower encoder configuration."""
    import threading

    from indexer.pipeline import CPU_BATCH, encode_streams
    from search.encoders.model_spec import ModelSpec
    from search.encoders.onnx_bundle import OnnxQueryEncoder, bundle_dir
    from search.encoders.ort_session import cpu_threads

    ensure_query_bundle()
    streams = encode_streams("cpu")
    enc = OnnxQueryEncoder(
        bundle_dir(ModelSpec.parse(MODEL, PRETRAINED)), threads=max(1, cpu_threads() // streams), eager=False
    )
    batch = x[:CPU_BATCH]
    enc.encode_pixels(batch)  # warm-up
    per_stream = max(2, args.ceiling_batches // 2)

    def work():
        for _ in range(per_stream):
            enc.encode_pixels(batch)

    note: dict = {}
    rates, cpu = [], []
    with quiet_machine(note):
        for _ in range(3):
            c0, t0 = time.process_time(), time.perf_counter()
            threads = [threading.Thread(target=work) for _ in range(streams)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            n = per_stream * streams * len(batch)
            rates.append(n / (time.perf_counter() - t0))
            cpu.append((time.process_time() - c0) * 1000 / n)
    rate, cpu_ms = statistics.median(rates), statistics.median(cpu)
    res.raw.update(ceiling_img_s_streams=rate, ceiling_cpu_ms_streams=cpu_ms)
    res.add(
        f"encoder-only ceiling as `glimpse index` runs it on CPU (ONNX bundle, {streams} concurrent single-thread "
        f"calls, batch {len(batch)}, median of 3 rounds)",
        f"{rate:.2f}",
        "",
        cond_str(note) + f", {cpu_ms:.0f} CPU-ms/img",
    )
    if rate > res.raw.get("ceiling_img_s", 0):
        res.raw.update(ceiling_img_s=rate, ceiling_cpu_ms=cpu_ms)


def section_index(res: Results, args, corpus_dir: Path) -> None:
    n = len(list(corpus_dir.glob("*.jpg")))
    ensure_query_bundle()  # one-time export per model (the first `glimpse index` does it); not timed
    rates, phases, cpus = [], [], []
    last = None
    for rep in range(args.index_repeats):
        home = DATA / "homes" / f"e2e-{n}"
        shutil.rmtree(home, ignore_errors=True)
        note: dict = {}
        with quiet_machine(note):
            start = time.time()
            r = run_timed(
                glimpse_cmd(home, "-v", "index", str(corpus_dir), "--model", MODEL, "--pretrained", PRETRAINED)
                + args.index_args
            )
        if r["rc"] != 0:
            raise RuntimeError(f"glimpse index failed ({r['rc']}):\n{r['stderr'][-3000:]}")
        loaded = _log_time(r["stderr"], "loaded on")
        embedded_end = _log_time(r["stderr"], "published index version")
        rate = n / r["wall_s"]
        phase = n / (embedded_end - loaded) if loaded and embedded_end else float("nan")
        cpus.append(r["cpu_s"] * 1000 / n)
        rates.append(rate)
        phases.append(phase)
        log(
            f"  run {rep + 1}: {r['wall_s']:.1f}s wall, {rate:.2f} img/s; model loaded after {loaded - start:.1f}s; "
            f"embed phase {phase:.2f} img/s [{cond_str(note)}]"
        )
        last = (r, note, home)
    r, note, home = last
    rate = statistics.median(rates)
    phase = statistics.median(phases)
    ceiling = res.raw.get("ceiling_img_s")
    res.raw.update(index_img_s=rate, index_phase_img_s=phase, index_runs=rates)
    res.add(
        f"end-to-end `glimpse index`, {n} JPEGs (img/s, whole command incl. start-up; median of {len(rates)})",
        f"{rate:.2f}",
        "",
        cond_str(note),
    )
    res.add("  same, embedding phase only (model loaded → index published)", f"{phase:.2f}")
    if ceiling:
        res.add(
            "  ratio end-to-end / encoder-only ceiling (wall clock: whole command, embedding phase)",
            f"{rate / ceiling:.1%}, {phase / ceiling:.1%}",
            ">= 90%",
            f"ceiling {ceiling:.2f} img/s: the faster encoder-only row above",
        )
    cpu_ms = statistics.median(cpus)
    res.raw["index_cpu_ms"] = cpu_ms
    if res.raw.get("ceiling_cpu_ms"):
        # Robust to other processes' load: CPU time per image, encoder alone vs the whole command.
        res.add(
            "  CPU efficiency: encoder-only CPU-ms/img ÷ whole-command CPU-ms/img (incl. decode workers)",
            f"{res.raw['ceiling_cpu_ms'] / cpu_ms:.1%} ({res.raw['ceiling_cpu_ms']:.0f} / {cpu_ms:.0f})",
        )
    res.add(
        "peak memory of indexing (MiB: tree PSS / tree RSS / main process)",
        f"{r['peak_pss_mib']:.0f} / {r['peak_rss_mib']:.0f} / {r['main_hwm_mib']:.0f}",
    )
    db_bytes = sum(os.path.getsize(p) for p in home.glob("glimpse.db*"))
    cur = (home / "index" / "current").read_text().strip()
    idx_bytes = dir_bytes(home / "index" / cur)
    res.raw.update(index_db_bytes=db_bytes, index_faiss_bytes=idx_bytes)
    res.add(
        "bytes per indexed image on disk (DB + live FAISS index)",
        f"{(db_bytes + idx_bytes) / n:,.0f} ({db_bytes / n:,.0f} + {idx_bytes / n:,.0f})",
    )


def section_index_int8(res: Results, args, corpus_dir: Path) -> None:
    """`glimpse index --quantize int8` end to end, and how many of float32's top-10 it keeps."""
    n = len(list(corpus_dir.glob("*.jpg")))
    ensure_query_bundle(int8=True)
    home = DATA / "homes" / f"e2e-{n}-int8"
    shutil.rmtree(home, ignore_errors=True)
    note: dict = {}
    with quiet_machine(note):
        r = run_timed(
            glimpse_cmd(
                home, "-v", "index", str(corpus_dir), "--model", MODEL, "--pretrained", PRETRAINED, "--quantize", "int8"
            )
            + args.index_args
        )
    if r["rc"] != 0:
        raise RuntimeError(f"glimpse index --quantize int8 failed ({r['rc']}):\n{r['stderr'][-3000:]}")
    loaded = _log_time(r["stderr"], "loaded on")
    end = _log_time(r["stderr"], "published index version")
    rate, phase = n / r["wall_s"], (n / (end - loaded) if loaded and end else float("nan"))
    res.raw.update(index_int8_img_s=rate, index_int8_phase_img_s=phase)
    res.add(
        f"end-to-end `glimpse index --quantize int8`, {n} JPEGs (img/s, whole command / embedding phase)",
        f"{rate:.2f} / {phase:.2f}",
        "",
        cond_str(note),
    )
    # Agreement: same queries against the float32 home of section_index (image queries: corpus files).
    fp32_home = DATA / "homes" / f"e2e-{n}"
    if not (fp32_home / "glimpse.db").exists():
        return
    from search.engine import Engine
    from search.query.kinds import FileQuery, Paging

    queries = sorted(corpus_dir.glob("*.jpg"))[:: max(1, n // 50)][:50]
    engines = [Engine.open(str(h)) for h in (fp32_home, home)]
    overlap = []
    for q in queries:
        ids = [[Path(x.path).name for x in e.search(FileQuery(str(q)), page=Paging(k=10)).results] for e in engines]
        overlap.append(len(set(ids[0]) & set(ids[1])) / 10)
    for e in engines:
        e.close()
    res.raw["int8_top10_agreement"] = statistics.mean(overlap)
    res.add(
        f"  int8 top-10 agreement with float32 ({len(overlap)} image queries, same query encoder)",
        f"{statistics.mean(overlap):.1%} (min {min(overlap):.0%})",
    )


def section_reindex(res: Results, args) -> None:
    from bench.synth import synth_home, tiny_tree

    n = args.reindex_files
    tree = tiny_tree(DATA / f"tiny{n // 1000}k", n)
    home = DATA / "homes" / f"files-{n // 1000}k"
    log(f"preparing home with {n:,} tiny files indexed")
    info = synth_home(home, n, files_root=tree, log=log)
    runs = []
    note: dict = {}
    run_timed(glimpse_cmd(home, "reindex"), watch=False)  # warm the page cache
    with quiet_machine(note):
        for _ in range(3):
            r = run_timed(glimpse_cmd(home, "reindex"))
            if r["rc"] != 0:
                raise RuntimeError(f"glimpse reindex failed:\n{r['stderr'][-3000:]}")
            runs.append(r["wall_s"])
    summary = r["stdout"].strip().splitlines()[-1] if r["stdout"].strip() else ""
    res.raw.update(reindex_s=runs, reindex_summary=summary, reindex_peak_pss_mib=r["peak_pss_mib"])
    res.add(
        f"no-op `glimpse reindex`, {n:,} files (s, median of 3, whole command)",
        f"{statistics.median(runs):.2f}",
        "<= 3 s",
        cond_str(note) + f"; {summary}",
    )
    res.raw.setdefault("homes", {})[n] = info


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 30.0):
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def section_query(res: Results, args) -> None:
    import requests

    from bench.synth import recall_at_10, synth_home, tiny_tree

    corpus_dir = corpus(args.corpus)
    query_images = sorted(corpus_dir.glob("*.jpg"))[: args.image_queries]
    texts = [
        f"{a} {b} in the {c}"
        for a in ("a red", "an old", "a small", "two", "a happy", "a blurry")
        for b in ("dog", "car", "boat", "house", "flower", "bicycle")
        for c in ("snow", "rain", "sun", "night")
    ]
    given = [Path(args.query_home)] if args.query_home else []
    for n in [int(json.loads((h / "bench-stamp.json").read_text())["n"]) for h in given] or args.query_sizes:
        if given:
            home = given[0]
            info = json.loads((home / "bench-stamp.json").read_text())
            live = home / "index" / (home / "index" / "current").read_text().strip()
            info["index_type"] = json.loads((live / "manifest.json").read_text())["index_type"]
            info.setdefault("publish_s", "?")
        elif n == args.reindex_files:
            home = DATA / "homes" / f"files-{n // 1000}k"
            info = synth_home(home, n, files_root=tiny_tree(DATA / f"tiny{n // 1000}k", n), log=log)
        else:
            home = DATA / "homes" / f"synth-{n}"
            log(f"preparing synthetic home with {n:,} vectors")
            info = synth_home(home, n, log=log)
        label = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M"
        rec = None if given else recall_at_10(home)  # a given home's recall: bench.publish_scale measures it
        itype = info["index_type"]
        desc = itype["type"] + (
            f" nlist={itype['nlist']} {itype.get('codec', '')} nprobe={itype['nprobe']}"
            if itype["type"] != "flat"
            else ""
        )
        if rec is not None:
            res.add(
                f"[{label}] index chosen; recall@10 vs exact (fresh queries / database points)",
                f"{desc}; {rec['recall']:.3f} / {rec['recall_db_points']:.3f}",
                ">= 0.95",
                f"publish {info['publish_s']}s, FAISS alone {rec['faiss_ms_p50']:.2f} ms/query",
            )
        ensure_query_bundle()  # one-time export per model (what `glimpse index` does); not start-up
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        note: dict = {}
        with quiet_machine(note):
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                glimpse_cmd(home, "serve", "--port", str(port)),
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=open(DATA / f"serve-{label}.log", "w"),
            )
            try:
                with TreeWatch(proc.pid, every=0.1) as w:
                    ready = first = None
                    while time.perf_counter() - t0 < 180:
                        if proc.poll() is not None:
                            raise RuntimeError(f"server exited {proc.returncode}; see {DATA / f'serve-{label}.log'}")
                        try:
                            if _get(base + "/api/health", 5)[0] == 200:
                                ready = time.perf_counter() - t0
                                break
                        except OSError:
                            time.sleep(0.05)
                    _get(base + "/api/search?q=warm+up&k=10")
                    first = time.perf_counter() - t0
                    sess = requests.Session()
                    queries = texts[: args.text_queries]
                    # `mode=images` is vision only, what /api/search did before hybrid search existed:
                    # the row stays comparable across versions (bench/ab.py); `auto` is today's default.
                    before_t = _server_times(sess, base)
                    lat_t = _text_ms(sess, base, queries, "", "images")
                    split_t = _server_split(before_t, _server_times(sess, base))
                    lat_auto = _text_ms(sess, base, queries, " at noon", "auto")
                    # Paging a text query: page 0 is new (text tower + FAISS), pages 1..4 reuse the kept query
                    # vector and ranking (search.query.cache) and hydrate only their own rows.
                    first_pages, later_pages = [], []
                    for q in queries:
                        for page in range(5):
                            t = time.perf_counter()
                            r = sess.get(
                                base + "/api/search",
                                params={"q": q + " photo", "k": 10, "page": page, "mode": "images"},
                                timeout=60,
                            )
                            (later_pages if page else first_pages).append((time.perf_counter() - t) * 1000)
                            r.raise_for_status()
                    lat_i = []
                    for p in query_images:
                        data = p.read_bytes()
                        t = time.perf_counter()
                        r = sess.post(
                            base + "/api/search/image",
                            files={"image": (p.name, data, "image/jpeg")},
                            data={"k": 10},
                            timeout=60,
                        )
                        lat_i.append((time.perf_counter() - t) * 1000)
                        r.raise_for_status()
                    # Once the server has paged its re-rank vectors into the page cache (it starts that
                    # when warm), as a server that has been up a while: new words, so nothing is reused.
                    lat_steady, cached = [], _wait_cached(_rerank_files(home), timeout=600)
                    split_steady = None
                    if cached is not None:
                        before_s = _server_times(sess, base)
                        lat_steady = _text_ms(sess, base, queries, " in winter", "images")
                        split_steady = _server_split(before_s, _server_times(sess, base))
                    w.sample()
                    mem_now = w.last
            finally:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        res.raw.setdefault("query", {})[n] = dict(
            ready_s=ready,
            first_s=first,
            text_ms=lat_t,
            text_auto_ms=lat_auto,
            page0_ms=first_pages,
            pages1to4_ms=later_pages,
            image_ms=lat_i,
            text_steady_ms=lat_steady,
            text_split=split_t,
            text_steady_split=split_steady,
            rerank_cached=cached,
            mem=mem_now,
            peak_pss=w.peak_pss_mib,
            recall=rec,
        )
        enc_ms = res.raw.get("text_encode_ms")
        res.add(
            f"[{label}] server ready: /api/health OK / first text query answered (s after start)",
            f"{ready:.2f} / {first:.2f}",
            "<= 5 s",
            cond_str(note),
        )
        res.add(
            f"[{label}] text query via /api/search, k=10 (ms p50 / p95, {len(lat_t)} queries)",
            f"{pct(lat_t, 0.5):.1f} / {pct(lat_t, 0.95):.1f}",
            f"<= {enc_ms + 10:.0f} (text encoder + 10 ms)" if enc_ms and n >= 1_000_000 else "",
        )
        res.add(
            f"[{label}] text query via /api/search, k=10, mode=auto (hybrid, the default; ms p50 / p95)",
            f"{pct(lat_auto, 0.5):.1f} / {pct(lat_auto, 0.95):.1f}",
        )
        for what, split in (("", split_t), (", re-rank vectors cached", split_steady if lat_steady else None)):
            if split:
                res.add(
                    f"[{label}] text query{what}: where the server's time goes (ms, mean over the same queries)",
                    f"{split['request']:.1f} = encode {split['encode']:.1f} + {split['beyond']:.1f} beyond the text "
                    f"tower (search {split['faiss'] + split['exact']:.1f}, hydrate {split['hydrate']:.1f})",
                    "beyond <= 15 ms" if n >= 10_000_000 else "",
                    "the server's /metrics, before and after the loop",
                )
        if lat_steady:
            res.add(
                f"[{label}] text query, mode=images, k=10, re-rank vectors in the page cache (ms p50 / p95)",
                f"{pct(lat_steady, 0.5):.1f} / {pct(lat_steady, 0.95):.1f}",
                f"<= {enc_ms + 15:.0f} (text encoder + 15 ms)" if enc_ms else "text encoder + 15 ms",
                f"{cached['share']:.0%} of {cached['bytes'] / 2**30:.1f} GiB cached after {cached['waited_s']:.0f} s",
            )
        p0, p14 = pct(first_pages, 0.5), pct(later_pages, 0.5)
        res.add(
            f"[{label}] paging a text query (mode=images, k=10): page 1 p50 / pages 2..5 p50 (ms), ratio",
            f"{p0:.1f} / {p14:.1f}, {p14 / p0:.0%}",
            "pages 2..5 <= 20% of page 1",
        )
        res.add(
            f"[{label}] image query via POST /api/search/image (ms p50 / p95, {len(lat_i)} phone-size JPEGs)",
            f"{pct(lat_i, 0.5):.1f} / {pct(lat_i, 0.95):.1f}",
        )
        res.add(
            f"[{label}] serving memory (MiB: RSS now / peak PSS)",
            f"{mem_now['rss_mib']:.0f} / {w.peak_pss_mib:.0f}",
            "<= 1229 (1.2 GB) resident" if n >= 1_000_000 else "",
        )
        db = sum(os.path.getsize(p) for p in home.glob("glimpse.db*"))
        cur = (home / "index" / "current").read_text().strip()
        res.add(
            f"[{label}] bytes per image on disk (DB + FAISS index)",
            f"{(db + dir_bytes(home / 'index' / cur)) / n:,.0f}",
        )


def _text_ms(sess, base: str, texts: list[str], suffix: str, mode: str) -> list[float]:
    """ms for each text query through /api/search, k=10. Each loop gives its own ``suffix``: a repeated
    text would reuse its kept vector and ranking."""
    out = []
    for q in texts:
        t = time.perf_counter()
        r = sess.get(base + "/api/search", params={"q": q + suffix, "k": 10, "mode": mode}, timeout=60)
        out.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
    return out


def _server_times(sess, base: str) -> dict[str, tuple[float, float]]:
    """(sum of seconds, count) per search stage and for GET /api/search, from the server's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, tuple[float, float]] = {}
    for fam in text_string_to_metric_families(sess.get(base + "/metrics", timeout=30).text):
        for sample in fam.samples:
            if sample.name == "glimpse_search_stage_duration_seconds_sum":
                key = sample.labels["stage"]
            elif sample.name == "glimpse_http_request_duration_seconds_sum":
                if sample.labels.get("route") != "/api/search":
                    continue
                key = "request"
            else:
                continue
            count = next(x.value for x in fam.samples if x.name.endswith("_count") and x.labels == sample.labels)
            out[key] = (sample.value, count)
    return out


def _server_split(before: dict, after: dict) -> dict[str, float] | None:
    """Mean ms per request between two ``_server_times`` snapshots: the request, each stage, and the
    request beyond its text encoding (what the issue's "text encoder + 15 ms" is about)."""
    d = {k: (after[k][0] - before.get(k, (0, 0))[0], after[k][1] - before.get(k, (0, 0))[1]) for k in after}
    n = d.get("request", (0, 0))[1]
    if not n:
        return None
    out = {k: 1000 * d.get(k, (0.0, 0))[0] / n for k in ("request", "encode", "faiss", "exact", "hydrate")}
    out["beyond"] = out["request"] - out["encode"]
    return out


def _rerank_files(home: Path) -> list[Path]:
    """The live index version's float16 re-rank segments (none below the compressed index sizes)."""
    live = home / "index" / (home / "index" / "current").read_text().strip()
    spec = json.loads((live / "manifest.json").read_text()).get("index_type") or {}
    return [live / name for name in spec.get("f16_files") or []]


def _wait_cached(paths: list[Path], timeout: float, share: float = 0.95) -> dict | None:
    """Wait until ``share`` of ``paths`` is in the page cache (util-linux ``fincore``); None without
    files, or if that does not happen within ``timeout`` (the server pages in what fits in half the
    free memory, so a machine short of RAM never gets there)."""
    if not paths:
        return None
    t0 = time.perf_counter()
    size = sum(p.stat().st_size for p in paths)
    while True:
        try:
            out = subprocess.run(
                ["fincore", "--bytes", "--noheadings", "--output", "RES", *map(str, paths)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            log(f"cannot tell what is in the page cache ({exc}); no page-cache figures")
            return None
        got = sum(int(x) for x in out.split()) / size
        waited = time.perf_counter() - t0
        if got >= share:
            return {"share": got, "bytes": size, "waited_s": waited}
        if waited > timeout:
            log(f"re-rank vectors only {got:.0%} cached after {waited:.0f} s; no page-cache figures")
            return None
        time.sleep(2)


def section_peers(res: Results, args, corpus_dir: Path) -> None:
    from bench import peers

    peers.run(res, args, corpus_dir, log)


# ---------------------------------------------------------------- main


def write_markdown(res: Results, args, started: str, info: dict, argv: list[str]) -> str:
    lines = [f"## {started} — `python bench/run.py{(' ' + ' '.join(argv)) if argv else ''}`", ""]
    lines.append(
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['mem_gb']} GB RAM, {info['os']}, no GPU used. "
        f"Python {info['python']}, torch {info['torch']}, open_clip {info['open_clip_torch']}, "
        f"faiss {info['faiss']}, onnxruntime {info['onnxruntime']}, Pillow {info['pillow']}, "
        f"numpy {info['numpy']}. Glimpse at {info['git']}. Model {MODEL} with random weights "
        f"(`--pretrained none`; speed does not depend on weight values). Load average at start: {info['load']}."
    )
    lines += ["", "| metric | value | target | conditions |", "| --- | --- | --- | --- |"]
    for m, v, t, c in res.rows:
        lines.append(f"| {m} | {v} | {t} | {c} |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke test of the script, not a result")
    ap.add_argument("--only", default="encoder,index,reindex,query,peers")
    ap.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    ap.add_argument("--index-args", default="", help="extra arguments for `glimpse index` (e.g. '--workers 1')")
    ap.add_argument("--index-repeats", type=int, default=None)
    ap.add_argument("--sizes", default=None, help="query sizes, e.g. 10000,100000,1000000")
    ap.add_argument(
        "--query-home",
        default=None,
        help="query an existing synthetic home (e.g. bench-data/scale/home-10000000-c4000-s50 from bench.publish_scale)"
        " instead of the --sizes ones",
    )
    ap.add_argument("--peer-images", type=int, default=None, help="corpus size for the peer comparison (default 1000)")
    ap.add_argument("--peer-rounds", type=int, default=None)
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 image-tower measurement")
    a = ap.parse_args(argv)
    a.index_args = a.index_args.split()
    user_peer_images, user_peer_rounds = a.peer_images, a.peer_rounds
    if a.quick:
        # Small, but still crossing the flat → IVF boundary.
        os.environ["GLIMPSE_FLAT_MAX"] = "5000"
        a.corpus, a.ceiling_batches, a.decode_images = 64, 2, 64
        a.reindex_files, a.query_sizes = 10_000, [2_000, 10_000, 20_000]
        a.text_queries, a.image_queries, a.index_repeats = 10, 4, a.index_repeats or 1
        a.peer_images, a.peer_rounds = 32, 1
    else:
        a.corpus, a.ceiling_batches, a.decode_images = 1000, 6, 1000
        a.reindex_files, a.query_sizes = 100_000, [10_000, 100_000, 1_000_000]
        a.text_queries, a.image_queries, a.index_repeats = 50, 20, a.index_repeats or 1
        a.peer_images, a.peer_rounds = 1000, 2
    a.peer_images = user_peer_images or a.peer_images
    a.peer_rounds = user_peer_rounds or a.peer_rounds
    if a.sizes:
        a.query_sizes = [int(s) for s in a.sizes.split(",")]
    only = set(a.only.split(","))
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    info = machine()
    info["load"] = loadavg()
    log(f"machine: {info}")
    DATA.mkdir(exist_ok=True)
    res = Results()
    corpus_dir = corpus(a.corpus) if only & {"encoder", "index", "peers"} else None
    try:
        if "encoder" in only:
            section_encoder(res, a, corpus_dir)
        if "index" in only:
            section_index(res, a, corpus_dir)
            if not a.no_int8:
                section_index_int8(res, a, corpus_dir)
        if "reindex" in only:
            section_reindex(res, a)
        if "query" in only:
            section_query(res, a)
        if "peers" in only:
            section_peers(res, a, corpus(a.peer_images))
    finally:
        md = write_markdown(res, a, started, info, argv)
        print(md)
        (DATA / "results").mkdir(exist_ok=True)
        (DATA / "results" / f"{started.replace(' ', '_').replace(':', '')}.json").write_text(
            json.dumps({"machine": info, "rows": res.rows, "raw": res.raw}, indent=2, default=str)
        )
        if not a.no_write and res.rows:
            bm = REPO / "BENCHMARKS.md"
            head = (
                ""
                if bm.exists()
                else (
                    "# Benchmarks\n\nAppended by `python bench/run.py` (see bench/README.md). Newest last. "
                    "Figures from `--quick` runs are smoke tests, not results.\n\n"
                )
            )
            with open(bm, "a") as f:
                f.write(head + md + "\n")
            log(f"appended to {bm}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
