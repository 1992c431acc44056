"""The query's text tower over its own tokens against the whole context (77 positions).

A causal CLIP text tower pooled at the end-of-text token gives the same vector without the padding after
it (``search.encoders.torch_clip.truncatable_text``); the query bundle cuts it. This times both ONNX towers
of one model on typical queries (1-8 words; a long caption too), single queries as a server answers them,
interleaved query by query, in ONNX Runtime with the query path's threads; and checks the vectors agree.

    python -m bench.text_tokens [--model ViT-B-32] [--pretrained none] [--rounds 5] [--threads 1]
    python -m bench.text_tokens --home bench-data/homes/ocr-100000 [--rounds 3]   # end to end

``--home``: the whole query (``Engine.search``, auto mode, k=10, as the API asks) on an indexed home, two
engines side by side, one told to give its bundle the whole context (what bundles before format 3 did),
each query asked of both in turn; every query text is new to both (no cache hit).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

QUERIES = [
    "cat",
    "sunset",
    "red car",
    "KX447",
    "a dog on a beach",
    "birthday cake with candles",
    "screenshot of an error message",
    "two people riding bicycles along a river at dusk",
    "a photo of a small wooden boat tied to a pier on a calm lake in the morning fog, mountains behind",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--pretrained", default="none", help="none: random weights (no download here)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--home", default=None, help="time whole queries on this indexed home instead")
    a = ap.parse_args()
    if a.home:
        return end_to_end(a.home, a.rounds)

    from bench.sysinfo import cpu_model, loadavg, version
    from search.encoders.onnx_bundle import cut_to_end
    from search.encoders.ort_session import cpu_session, unit_rows
    from search.encoders.torch_clip import Encoder, ModelSpec, export_onnx, truncatable_text

    enc = Encoder(ModelSpec.parse(a.model, a.pretrained), device="cpu")
    cut = truncatable_text(enc.model)
    if cut is None:
        raise SystemExit(f"{a.model}: its text tower cannot be cut (it keeps the whole context)")
    work = tempfile.mkdtemp(prefix="text-tokens-")
    dummy = enc.tokenizer(["a photo of a cat", "a dog"])
    export_onnx(enc.model, "encode_text", dummy, os.path.join(work, "context.onnx"), "tokens")
    export_onnx(cut, "forward", dummy[:, :8], os.path.join(work, "to_end.onnx"), "tokens", tokens_axis=True)
    sessions = {name: cpu_session(os.path.join(work, f"{name}.onnx"), a.threads) for name in ("context", "to_end")}
    tokens = {q: enc.tokenizer([q]).numpy() for q in QUERIES}

    def run(name: str, q: str) -> np.ndarray:
        t = tokens[q]
        if name == "to_end":
            t = cut_to_end(t)
        return sessions[name].run(None, {"tokens": t})[0]

    worst = max(float(np.abs(unit_rows(run("context", q)) - unit_rows(run("to_end", q))).max()) for q in QUERIES)
    times: dict[str, dict[str, list[float]]] = {n: {q: [] for q in QUERIES} for n in sessions}
    for _ in range(a.rounds):
        for q in QUERIES:
            for name in sessions:  # interleaved: the machine's load falls on both alike
                t0 = time.perf_counter()
                run(name, q)
                times[name][q].append(time.perf_counter() - t0)
    print(f"{cpu_model()}; load {loadavg()}; onnxruntime {version('onnxruntime')}, torch {version('torch')}")
    print(f"{a.model} ({a.pretrained}), ONNX Runtime {a.threads} thread(s), {a.rounds} rounds; max |diff| {worst:.1e}")
    print("| query | tokens | whole context (ms) | to its end (ms) | speed-up |\n|---|---|---|---|---|")
    for q in QUERIES:
        n = cut_to_end(tokens[q]).shape[1]
        full, cut_ms = (1000 * statistics.median(times[name][q]) for name in ("context", "to_end"))
        print(f"| {q[:40]}{'…' if len(q) > 40 else ''} | {n} | {full:.1f} | {cut_ms:.1f} | {full / cut_ms:.1f}× |")


def end_to_end(home: str, rounds: int) -> None:
    from pathlib import Path

    from bench.sysinfo import cpu_model, loadavg
    from search.engine import Engine
    from search.paths import Paths
    from search.query.kinds import Filters, Paging, TextQuery
    from search.vectors.live import configure_query_threads

    configure_query_threads()
    engines = {"whole context": Engine(Paths.resolve(Path(home))), "to its end": Engine(Paths.resolve(Path(home)))}
    for eng in engines.values():
        eng.warm()
    engines["whole context"].encoder._tokens_to_end = False  # type: ignore[attr-defined]
    assert engines["to its end"].encoder._tokens_to_end  # type: ignore[attr-defined]
    times: dict[str, list[float]] = {name: [] for name in engines}
    for r in range(rounds):
        for i, q in enumerate(QUERIES):
            for name, eng in engines.items():
                text = f"{q} {r}{i}"  # new to both engines' caches
                t0 = time.perf_counter()
                eng.search(TextQuery(text, mode="auto"), Filters(min_score_auto=True), Paging(k=10))
                times[name].append(time.perf_counter() - t0)
    print(f"{cpu_model()}; load {loadavg()}; {home}: {rounds} x {len(QUERIES)} queries, interleaved")
    for name, ts in times.items():
        ms = sorted(1000 * t for t in ts)
        print(f"{name}: p50 {statistics.median(ms):.1f} ms, p90 {ms[int(0.9 * (len(ms) - 1))]:.1f} ms")


if __name__ == "__main__":
    main()
