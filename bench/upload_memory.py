#!/usr/bin/env python3
"""Server memory under hostile uploads: one command, two rows, appended to BENCHMARKS.md.

    python bench/upload_memory.py [--no-write] [--only-failed]

Serves the demo corpus (indexed once with the shipped model, cached in
``bench-data/upload-home``) with a real ``glimpse serve`` on 127.0.0.1 and its
default settings, and sends 8 concurrent uploads (waitress's default thread
count) of one PNG to ``POST /api/search/image``:

  * 13,000 x 13,000 RGBA (169 MP, 0.7 MB on the wire, 676 MB decoded): over the
    upload pixel limit (GLIMPSE_MAX_UPLOAD_PIXELS, 50 MP), refused from its header;
  * 7,000 x 7,000 RGBA (49 MP, 196 MB decoded): just under it, so decoded, under
    the decode budget (GLIMPSE_DECODE_BUDGET_MB), then trimmed.

  * a 68-byte PNG whose header claims 7,000 x 7,000 RGBA and whose pixels stop at once, sent
    FAILED_UPLOADS times, 8 at a time: Pillow allocates the 196 MB before the first row fails (400).
    What matters is what the server keeps afterwards: its resident memory after minus before, the
    median of FAILED_REPEATS fresh servers (target: at most FAILED_TARGET_MIB kept; before the fix each
    thread kept 150-200 MB).

A fresh server per row. It records every status, the server's peak resident
memory (VmHWM from /proc/PID/status) before and after the uploads, and its
resident memory afterwards (what glibc gave back). Target: the peak rises by at
most 1.5 GB and every upload gets a 200 or a clear 4xx. The PNGs are written
once (without holding their pixels) to ``bench-data/uploads/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.big_png import header_only_png, write_png  # noqa: E402
from bench.served import glimpse_serving  # noqa: E402
from bench.sysinfo import loadavg, machine, quiet_machine  # noqa: E402

DATA = REPO / "bench-data"
HOME = DATA / "upload-home"
MODEL = f"local-dir:{REPO / 'models' / 'glimpse-icons-distil'}"
UPLOADS = 8
TARGET_MIB = 1536
SHAPES = [(13_000, 13_000), (7_000, 7_000)]
FAILED_UPLOADS = 20
FAILED_REPEATS = 3
FAILED_TARGET_MIB = 150


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ensure_home() -> None:
    if (HOME / "index" / "current").exists():
        return
    log("indexing the demo corpus with the shipped model (once)")
    corpus = REPO / "demo" / "corpus"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "glimpse.cli",
            "--home",
            str(HOME),
            "index",
            str(corpus / "images"),
            "--captions",
            str(corpus / "captions.jsonl"),
            "--model",
            MODEL,
        ],
        check=True,
        cwd=REPO,
    )


def status_kib(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as f:
        return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f) if k in ("VmHWM", "VmRSS")}


def post_image(url: str, data: bytes) -> tuple[int, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="upload.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=600) as resp:
            return resp.status, ""
    except urllib.error.HTTPError as err:
        return err.code, json.load(err).get("error", "")


def one_row(data: bytes, small: bytes, count: int = UPLOADS) -> dict:
    """A fresh server; one warm-up query by a small image; then ``count`` uploads of ``data``, UPLOADS at once."""
    with glimpse_serving(HOME) as (proc, url):
        endpoint = f"{url}/api/search/image?k=10"
        warm = post_image(endpoint, small)
        before = status_kib(proc.pid)
        note: dict = {}
        with quiet_machine(note, pause=False):  # records load; other people's jobs are left alone
            t0 = time.perf_counter()
            with ThreadPoolExecutor(UPLOADS) as pool:
                answers = list(pool.map(lambda _: post_image(endpoint, data), range(count)))
            wall = time.perf_counter() - t0
        after = status_kib(proc.pid)
        alive = urllib.request.urlopen(f"{url}/api/health", timeout=30).status
        return {
            "bytes": len(data),
            "warm": warm[0],
            "answers": answers,
            "wall_s": wall,
            "hwm_before_mib": before["VmHWM"] / 1024,
            "hwm_after_mib": after["VmHWM"] / 1024,
            "rss_before_mib": before["VmRSS"] / 1024,
            "rss_after_mib": after["VmRSS"] / 1024,
            "health": alive,
            "note": note,
        }


def failed_row(small: bytes) -> tuple[str, str, str, str]:
    """FAILED_UPLOADS failed decodes on each of FAILED_REPEATS fresh servers; the median memory kept."""
    data = header_only_png(7_000, 7_000)
    runs = [one_row(data, small, FAILED_UPLOADS) for _ in range(FAILED_REPEATS)]
    kept = sorted(r["rss_after_mib"] - r["rss_before_mib"] for r in runs)
    median = statistics.median(kept)
    statuses = [s for r in runs for s, _ in r["answers"]]
    counts = ", ".join(f"{statuses.count(s)}x {s}" for s in sorted(set(statuses)))
    ok = median <= FAILED_TARGET_MIB and all(r["health"] == 200 for r in runs) and set(statuses) == {400}
    line = (
        f"{FAILED_UPLOADS} uploads ({UPLOADS} at once) of a {len(data)}-byte PNG claiming 7,000 x 7,000: {counts}; "
        f"RSS kept afterwards {', '.join(f'{k:+.0f}' for k in kept)} MiB (median {median:+.0f}); "
        f"{'MET' if ok else 'NOT MET'}"
    )
    print(line, flush=True)
    r = runs[len(runs) // 2]
    return (
        f"{FAILED_UPLOADS} uploads ({UPLOADS} at once) of a {len(data)}-byte PNG claiming 7,000 x 7,000 RGBA "
        f"(fails decoding after Pillow allocates 196 MB): server RSS kept afterwards, median of {FAILED_REPEATS} "
        f"fresh servers (MiB; each run)",
        f"{median:+.0f} ({', '.join(f'{k:+.0f}' for k in kept)})",
        f"<= {FAILED_TARGET_MIB}",
        f"load {r['note'].get('load_before', '?')}, others {r['note'].get('other_cores', '?')} cores; {counts} "
        f"({sorted({m for run in runs for _, m in run['answers']})[0]}); peak RSS "
        f"{r['hwm_before_mib']:.0f} -> {r['hwm_after_mib']:.0f} MiB; /api/health 200 afterwards",
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    ap.add_argument("--only-failed", action="store_true", help="only the failed-decode row")
    a = ap.parse_args(argv)
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    info = machine()
    load_at_start = loadavg()
    ensure_home()
    pngs = [] if a.only_failed else [write_png(DATA / "uploads" / f"{w}x{h}-rgba.png", w, h) for w, h in SHAPES]
    small = write_png(DATA / "uploads" / "64x64-rgba.png", 64, 64).read_bytes()
    rows = []
    for (w, h), png in zip(SHAPES, pngs):
        r = one_row(png.read_bytes(), small)
        rise = r["hwm_after_mib"] - r["hwm_before_mib"]
        statuses = [s for s, _ in r["answers"]]
        clear = all(s == 200 or (400 <= s < 500 and msg) for s, msg in r["answers"])
        ok = rise <= TARGET_MIB and clear and r["health"] == 200
        counts = ", ".join(f"{statuses.count(s)}x {s}" for s in sorted(set(statuses)))
        errors = sorted({msg for _, msg in r["answers"] if msg})
        line = (
            f"{UPLOADS} concurrent uploads of a {w:,} x {h:,} RGBA PNG ({r['bytes'] / 1e6:.2f} MB, "
            f"{w * h / 1e6:.0f} MP): {counts}; peak RSS {r['hwm_before_mib']:.0f} -> {r['hwm_after_mib']:.0f} MiB "
            f"(+{rise:.0f}), RSS after {r['rss_after_mib']:.0f} MiB; {r['wall_s']:.1f} s; "
            f"{'MET' if ok else 'NOT MET'}"
        )
        print(line, flush=True)
        rows.append(
            (
                f"{UPLOADS} concurrent uploads, {w:,} x {h:,} RGBA PNG ({w * h / 1e6:.0f} MP, "
                f"{r['bytes'] / 1e6:.2f} MB): server peak RSS rise (MiB; before -> after; RSS after)",
                f"+{rise:.0f} ({r['hwm_before_mib']:.0f} -> {r['hwm_after_mib']:.0f}; {r['rss_after_mib']:.0f})",
                f"<= {TARGET_MIB} (1.5 GB)",
                f"load {r['note'].get('load_before', '?')}, others {r['note'].get('other_cores', '?')} cores; "
                f"{counts} in {r['wall_s']:.1f} s"
                + (f" ({'; '.join(errors)})" if errors else "")
                + f"; /api/health {r['health']} afterwards",
            )
        )
    rows.append(failed_row(small))
    md = [
        f"## {started} — `python bench/upload_memory.py{' --only-failed' if a.only_failed else ''}`",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['mem_gb']} GB RAM, {info['os']}. Python "
        f"{info['python']}, Pillow {info['pillow']}. Glimpse at {info['git']}. `glimpse serve` with default "
        f"settings (8 threads, GLIMPSE_MAX_UPLOAD_PIXELS 50 MP, GLIMPSE_DECODE_BUDGET_MB 1024), the demo corpus "
        f"indexed with models/glimpse-icons-distil; a fresh server per row, warmed by one small image query. "
        f"Load average at start: {load_at_start}.",
        "",
        "| metric | value | target | conditions |",
        "| --- | --- | --- | --- |",
    ]
    md += [f"| {m} | {v} | {t} | {c} |" for m, v, t, c in rows] + [""]
    text = "\n".join(md)
    print(text)
    if not a.no_write:
        with open(REPO / "BENCHMARKS.md", "a") as f:
            f.write(text + "\n")
        log("appended to BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
