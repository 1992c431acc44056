#!/usr/bin/env python3
"""The API under Schemathesis for a long run: one command, one row appended to BENCHMARKS.md.

    python bench/fuzz.py [--minutes 10] [--seed N] [--workers 2] [--no-write]

Serves a small corpus (48 demo images with their captions, indexed once with the shipped model into
``bench-data/fuzz-home``) with a real ``glimpse serve`` on 127.0.0.1 behind a login, and runs
``st run`` (Schemathesis) driven by the server's own ``/api/openapi.json``: every phase (examples,
coverage, fuzzing, stateful), fuzzing repeated until the time budget is spent, the checks
``CHECKS`` (server errors, status codes, response schemas, content types, headers). It records the
cases generated, the unique failures and errors, the seed (random unless given, always printed) and
the duration. Target: 0 failures and 0 errors, at least 30,000 cases in at least 10 minutes.

A small corpus keeps each request cheap, so the budget goes on many cases rather than on a few slow
ones. tests/test_fuzz_api.py runs the same harness (``run_schemathesis``) for a bounded case count
against the test corpus in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.served import glimpse_serving  # noqa: E402
from bench.sysinfo import loadavg, machine  # noqa: E402

DATA = REPO / "bench-data"
HOME = DATA / "fuzz-home"
CORPUS = DATA / "fuzz-corpus"
MODEL = f"local-dir:{REPO / 'models' / 'glimpse-icons-distil'}"
IMAGES = 48
USER, PASSWORD = "fuzz", "fuzz-password-24"
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "response_schema_conformance",
    "content_type_conformance",
    "response_headers_conformance",
)
TARGET_CASES = 30_000


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ensure_home() -> Path:
    """``IMAGES`` demo images (every source folder, in name order) and their captions, indexed once."""
    if (HOME / "index" / "current").exists():
        return HOME
    demo = REPO / "demo" / "corpus"
    pngs = sorted((demo / "images").rglob("*.png"))
    shutil.rmtree(CORPUS, ignore_errors=True)
    for f in pngs[:: max(1, len(pngs) // IMAGES)][:IMAGES]:
        target = CORPUS / f.relative_to(demo)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    kept = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*.png")}
    with open(demo / "captions.jsonl") as src, open(CORPUS / "captions.jsonl", "w") as out:
        for line in src:
            if json.loads(line)["path"] in kept:
                out.write(line)
    log(f"indexing {len(kept)} demo images with the shipped model (once)")
    subprocess.run(
        [sys.executable, "-m", "glimpse.cli", "--home", str(HOME), "index", str(CORPUS / "images")]
        + ["--captions", str(CORPUS / "captions.jsonl"), "--model", MODEL],
        check=True,
        cwd=REPO,
    )
    return HOME


@contextlib.contextmanager
def serving(home: Path, users_file: Path) -> Iterator[str]:
    """`glimpse serve --port 0` behind the login in ``users_file``; yields its base URL."""
    with glimpse_serving(home, {"GLIMPSE_USERS_FILE": str(users_file)}, drop=("GLIMPSE_ALLOWED_HOSTS",)) as (_, url):
        yield url


def run_schemathesis(
    base_url: str,
    seed: int,
    *,
    max_examples: int | None = None,
    max_time: int | None = None,
    workers: int = 1,
    auth: tuple[str, str] = (USER, PASSWORD),
    report_dir: Path | None = None,
) -> dict:
    """``st run`` against ``base_url``'s own OpenAPI document with ``CHECKS`` and a login; its JSON report,
    plus ``output`` (the run's text, with each failure's curl line to reproduce it) and ``wall_s``."""
    st = Path(sys.executable).with_name("st")
    with tempfile.TemporaryDirectory(dir=report_dir) as tmp:
        report = Path(tmp) / "report.json"
        cmd = [
            str(st),
            "run",
            f"{base_url}/api/openapi.json",
            "--checks",
            ",".join(CHECKS),
            "--seed",
            str(seed),
            "--auth",
            f"{auth[0]}:{auth[1]}",
            "--workers",
            str(workers),
            "--request-timeout",
            "60",
            "--report",
            "json",
            "--report-json-path",
            str(report),
        ]
        cmd += ["--max-examples", str(max_examples)] if max_examples else []
        cmd += ["--max-time", str(max_time)] if max_time else []
        env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false", "HYPOTHESIS_STORAGE_DIRECTORY": tmp}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
        wall = time.perf_counter() - t0
        if not report.exists():
            raise RuntimeError(f"st run wrote no report (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        out = json.loads(report.read_text())
    out["output"] = proc.stdout + proc.stderr
    out["wall_s"] = wall
    return out


def summary(report: dict) -> str:
    cases = report["test_cases"]
    errors = sum(e["count"] for e in report["errors"])
    return (
        f"{cases['generated']:,} cases, {cases['unique_failures']} unique failures, {errors} errors, "
        f"seed {report['seed']}, {report['running_time']:.0f} s"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="time budget (fuzzing repeats until it is spent)")
    ap.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-write", action="store_true", help="print the row, leave BENCHMARKS.md alone")
    a = ap.parse_args(argv)
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1, 2**31)
    log(f"seed {seed}")
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    info, load_start = machine(), loadavg()
    home = ensure_home()
    from web.users import add

    with tempfile.TemporaryDirectory() as tmp:
        users = Path(tmp) / "users"
        add(users, USER, PASSWORD)
        with serving(home, users) as url:
            log(f"fuzzing {url} for {a.minutes:g} min with {a.workers} workers")
            report = run_schemathesis(url, seed, max_time=int(a.minutes * 60), workers=a.workers)
    load_end = loadavg()
    print(report["output"][-6000:])
    line = summary(report)
    cases = report["test_cases"]
    errors = sum(e["count"] for e in report["errors"])
    ok = cases["unique_failures"] == 0 and errors == 0 and cases["generated"] >= TARGET_CASES
    print(f"{line}: {'MET' if ok else 'NOT MET'}", flush=True)
    phases = ", ".join(f"{k} {v['status']}" for k, v in report["phases"].items())
    failures = "; ".join(f"{f.get('title', f)}" for f in report["failures"]) or "none"
    md = [
        f"## {started} — `python bench/fuzz.py --minutes {a.minutes:g} --seed {seed} --workers {a.workers}`",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['mem_gb']} GB RAM, {info['os']}. Python "
        f"{info['python']}, Schemathesis {report['schemathesis_version']}. Glimpse at {info['git']}. `glimpse serve` "
        f"(8 threads) behind a login, {IMAGES} demo images indexed with models/glimpse-icons-distil; `st run` "
        f"against its /api/openapi.json with the checks {', '.join(CHECKS)}. Load average at start {load_start}, "
        f"at the end {load_end}.",
        "",
        "| metric | value | target | conditions |",
        "| --- | --- | --- | --- |",
        f"| Schemathesis cases / unique failures / errors | {cases['generated']:,} / {cases['unique_failures']} / "
        f"{errors} | >= {TARGET_CASES:,} / 0 / 0 | seed {seed}; {report['running_time']:.0f} s; "
        f"{report['operations']['tested']} operations; phases: {phases}; failures: {failures} |",
        "",
    ]
    text = "\n".join(md)
    print(text)
    if not a.no_write:
        with open(REPO / "BENCHMARKS.md", "a") as f:
            f.write("\n" + text)
        log("appended to BENCHMARKS.md")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
