#!/usr/bin/env python3
"""Smoke test of the product install: every CLI verb and every HTTP route, on the bundled demo.

Run it with the Python of the venv under test (`.ci/run` runs it right after `scripts/setup.sh`, before the
dev extras are installed, so that a module the product imports but does not declare fails here):

    .venv/bin/python scripts/smoke_product.py

Standard library only (the product install has no pytest). In a temporary GLIMPSE_HOME (and ONNX cache) it
indexes demo/corpus with its captions and the shipped model models/glimpse-icons-distil, as demo.sh does, then
runs every CLI verb (`glimpse train`: the tiny preset for one epoch), then `glimpse serve` on 127.0.0.1 on a
free port, and requests every page, API route, page fragment, thumbnail, file and static asset (and the links
found on the pages). A feature that needs an extra that is not installed (`--engine ray`,
`train --text-teacher`) must answer with one line naming the extra. It fails (exit 1, one `SMOKE FAILED` line
naming the step) on a CLI verb's unexpected exit code, on "Traceback" in any output or in the server's log,
and on any 5xx (or any unexpected status). The server it started is always stopped, and the temporary folder
removed (SMOKE_KEEP=1 keeps it, to look into).
"""

from __future__ import annotations

import atexit
import base64
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GLIMPSE = str(Path(sys.executable).parent / "glimpse")
CORPUS = ROOT / "demo" / "corpus"
MODEL = f"local-dir:{ROOT / 'models' / 'glimpse-icons-distil'}"
# A hung step, not a slow one: indexing the demo (OCR on: ~160 s on a quiet 2-core machine) took over 300 s
# beside other work; the whole of .ci/run still has its own limit.
STEP_TIMEOUT = 900
STARTED = time.monotonic()


class SmokeFailure(Exception):
    pass


def fail(step: str, why: str, output: str = "") -> None:
    if output:
        tail = output[-4000:]
        print(f"--- output of {step} (last {len(tail)} chars) ---\n{tail}\n--- end of output ---", flush=True)
    raise SmokeFailure(f"{step}: {why}")


def ok(step: str, t0: float) -> None:
    print(f"ok    {step} ({time.monotonic() - t0:.1f}s)", flush=True)


# --- the command line -------------------------------------------------------------------------------------------


def glimpse(step: str, *args: str, rc: int | set[int] = 0, stdin: str | None = None, env: dict | None = None) -> str:
    """Run `glimpse ARGS`; fail on an unexpected exit code or a traceback. Returns stdout + stderr."""
    t0 = time.monotonic()
    try:
        done = subprocess.run(
            [GLIMPSE, *args],
            input=stdin,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=STEP_TIMEOUT,
            env=env or ENV,
            cwd=WORK,
        )
    except subprocess.TimeoutExpired as exc:
        out = "".join(x.decode(errors="replace") if isinstance(x, bytes) else x for x in (exc.stdout, exc.stderr) if x)
        fail(step, f"no exit after {STEP_TIMEOUT}s", out)
    out = done.stdout + done.stderr
    wanted = {rc} if isinstance(rc, int) else rc
    if done.returncode not in wanted:
        fail(step, f"`glimpse {' '.join(args)}` exited {done.returncode}, expected {sorted(wanted)}", out)
    if "Traceback" in out:
        fail(step, f"`glimpse {' '.join(args)}` printed a traceback", out)
    ok(step, t0)
    return done.stdout if done.returncode == 0 else out


def as_json(step: str, text: str):
    try:
        return json.loads(text)
    except ValueError as exc:
        fail(step, f"output is not JSON ({exc})", text)


def extra_missing(step: str, args: list[str], extra: str, module: str, env: dict | None = None) -> None:
    """A feature whose extra is not installed: one error line naming `pip install -e '.[extra]'`, no traceback."""
    if importlib.util.find_spec(module) is not None:
        print(f"skip  {step} ({module} is installed here: the product install has no '{extra}' extra)")
        return
    out = glimpse(step, *args, rc={1, 2}, env=env)
    lines = [line for line in out.splitlines() if line.strip()]
    if len(lines) != 1 or f".[{extra}]" not in lines[0]:
        fail(step, f"expected one line naming the extra (pip install -e '.[{extra}]'), got {len(lines)} lines", out)


def cli_steps() -> Path:
    """Every CLI verb on the demo; returns an indexed image file (for the query-by-image requests)."""
    image_file = next(p for p in sorted((CORPUS / "images").rglob("*.png")))
    glimpse("--version", "--version")
    glimpse("db upgrade (new home)", "db", "upgrade")
    glimpse("index demo", "index", str(CORPUS), "--captions", str(CORPUS / "captions.jsonl"), "--model", MODEL)
    glimpse("search", "search", "cat")  # the plain lines
    for mode in ("auto", "images", "captions", "keywords"):
        step = f"search --mode {mode} --json"
        results = as_json(step, glimpse(step, "search", "a red heart", "--mode", mode, "--json", "-k", "5"))
        if not isinstance(results, list) or (mode != "keywords" and not results):
            fail(step, f"expected a non-empty JSON list, got {str(results)[:200]}")
    glimpse("search --captions", "search", "--captions", "a penguin")
    out = glimpse("search --image", "search", "--image", str(image_file), "--json")
    if not as_json("search --image", out):
        fail("search --image", "no results for an indexed image")
    filters = ["--folder", str(CORPUS / "images"), *"--date-from 1970-01-01 --date-to 2999-12-31".split()]
    glimpse("search with filters", "search", "house", *filters, *"--order date --min-score auto -k 5 --page 1".split())
    glimpse("search bad -k (usage error)", "search", "cat", "-k", "0", rc=2)
    dup = as_json("duplicates --json", glimpse("duplicates --json", "duplicates", "--json"))
    if not isinstance(dup, dict) or "groups" not in dup:
        fail("duplicates --json", f"expected an object with groups, got {str(dup)[:200]}")
    glimpse("duplicates --threshold 0.9", "duplicates", "--threshold", "0.9")
    glimpse("stats", "stats")
    stats = as_json("stats --json", glimpse("stats --json", "stats", "--json"))
    count = stats.get("images_indexed") if isinstance(stats, dict) else None
    if not isinstance(count, int) or count <= 0:
        fail("stats --json", f"expected a positive image count, got {str(stats)[:300]}")
    glimpse("reindex", "reindex")
    glimpse("db upgrade (again)", "db", "upgrade")
    glimpse("user list (none)", "user", "list")
    # Features whose extra the product does not install: one line naming the extra, never a traceback.
    one = WORK / "one"
    one.mkdir()
    shutil.copy(image_file, one / image_file.name)
    extra_missing(
        "index --engine ray (no ray extra)",
        ["index", str(one), "--model", MODEL, "--engine", "ray"],
        "ray",
        "ray",
        env={**ENV, "GLIMPSE_HOME": str(WORK / "home-ray")},  # a home of its own: this run has a file to embed
    )
    train = ["train", "--captions", str(CORPUS / "captions.jsonl"), "--out", str(WORK / "trained")]
    train += ["--work", str(WORK / "train" / "teacher-work"), "--text-teacher", "all-MiniLM-L6-v2", "--epochs", "0.01"]
    extra_missing("train --text-teacher (no train extra)", train, "train", "transformers")
    # train itself needs no extra: one epoch of the tiny preset on the demo's captions (a few seconds).
    train = ["train", "--captions", str(CORPUS / "captions.jsonl"), "--out", str(WORK / "tiny"), "--work"]
    train += [
        str(WORK / "train" / "tiny-work"),
        *"--config glimpse-icons-tiny --epochs 1 --batch-size 64 --warmup-steps 1".split(),
    ]
    glimpse("train (tiny preset, 1 epoch)", *train)
    if not (WORK / "tiny" / "open_clip_config.json").is_file():
        fail("train (tiny preset, 1 epoch)", "no model written (open_clip_config.json)")
    return image_file


# --- the server -------------------------------------------------------------------------------------------------


class Client:
    def __init__(self, base: str):
        self.base = base
        self.auth: str | None = None
        self.seen: set[str] = set()

    def request(
        self,
        step: str,
        path: str,
        *,
        method: str = "GET",
        body: bytes | None = None,
        headers: dict | None = None,
        status: int | set[int] = 200,
        auth: bool = True,
        quiet: bool = False,
    ) -> tuple[int, dict, bytes]:
        t0 = time.monotonic()
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=dict(headers or {}))
        if auth and self.auth:
            req.add_header("Authorization", self.auth)
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                code, hdrs, data = resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            code, hdrs, data = exc.code, dict(exc.headers), exc.read()
        except OSError as exc:
            fail(step, f"{method} {path}: no answer ({exc})")
        self.seen.add(urllib.parse.urlsplit(path).path)
        text = data[:2000].decode("utf-8", "replace")
        if code >= 500:
            fail(step, f"{method} {path} answered {code}", text)
        wanted = {status} if isinstance(status, int) else status
        if code not in wanted:
            fail(step, f"{method} {path} answered {code}, expected {sorted(wanted)}", text)
        if "Traceback" in data.decode("utf-8", "replace"):
            fail(step, f"{method} {path}: a traceback in the answer", text)
        if not quiet:
            ok(f"{step}: {method} {path} {code}", t0)
        return code, hdrs, data

    def json(self, step: str, path: str, **kw):
        _, _, data = self.request(step, path, **kw)
        try:
            return json.loads(data)
        except ValueError:
            fail(step, f"{path}: not JSON", data[:2000].decode("utf-8", "replace"))

    def post_json(self, step: str, path: str, payload: dict, **kw):
        body = json.dumps(payload).encode()
        return self.json(step, path, method="POST", body=body, headers={"Content-Type": "application/json"}, **kw)

    def post_file(self, step: str, path: str, field: str, file: Path, fields: dict | None = None, **kw):
        boundary = uuid.uuid4().hex
        parts = []
        for name, value in (fields or {}).items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{file.name}"\r\n'
            f"Content-Type: image/png\r\n\r\n".encode()
            + file.read_bytes()
            + b"\r\n"
        )
        parts.append(f"--{boundary}--\r\n".encode())
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        return self.json(step, path, method="POST", body=b"".join(parts), headers=headers, **kw)


LINK = re.compile(r'(?:href|src)="(/[^"#]*)"|srcset="([^"]*)"')


def links(html: bytes) -> list[str]:
    found = []
    for href, srcset in LINK.findall(html.decode("utf-8", "replace")):
        if href:
            found.append(href)
        for item in srcset.split(","):
            url = item.strip().split(" ")[0]
            if url.startswith("/"):
                found.append(url)
    return [url.replace("&amp;", "&") for url in found]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVER: subprocess.Popen | None = None


def stop_server() -> None:
    global SERVER
    proc, SERVER = SERVER, None
    if proc is None or proc.poll() is not None:
        return
    # Ctrl-C, as a user stops it (glimpse serve closes the server and the engine); then harder.
    for stop in (lambda: proc.send_signal(signal.SIGINT), proc.terminate, proc.kill):
        stop()
        try:
            proc.wait(timeout=20)
            return
        except subprocess.TimeoutExpired:
            print(f"warning: the server (pid {proc.pid}) is still running 20s after a stop signal", flush=True)


def start_server(log_path: Path) -> Client:
    global SERVER
    port = free_port()
    t0 = time.monotonic()
    log = open(log_path, "wb")
    SERVER = subprocess.Popen(
        [GLIMPSE, "serve", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=ENV,
        cwd=WORK,
        # A command started in the background by a shell ignores SIGINT, and Python then keeps it ignored:
        # give the server the default, so that stop_server's Ctrl-C reaches it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    base = f"http://127.0.0.1:{port}"
    while True:
        if SERVER.poll() is not None:
            fail(
                "serve",
                f"the server exited {SERVER.returncode} before answering",
                log_path.read_text("utf-8", "replace"),
            )
        try:
            with urllib.request.urlopen(base + "/api/health", timeout=5) as resp:
                if resp.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() - t0 > 120:
            fail("serve", "no answer on /api/health within 120s", log_path.read_text("utf-8", "replace"))
        time.sleep(0.25)
    ok(f"serve on {base}", t0)
    return Client(base)


def http_steps(c: Client, image_file: Path) -> None:
    health = c.json("health", "/api/health")
    if health.get("status") != "ok":
        fail("health", f"status is not ok: {health}")
    c.json("stats", "/api/stats")
    doc = c.json("openapi", "/api/openapi.json")
    found = c.json("search", "/api/search?q=cat&k=5")
    results = found.get("results") or []
    if not results:
        fail("search", f"/api/search?q=cat found nothing: {str(found)[:300]}")
    image_id = results[0]["id"]
    for mode in ("auto", "images", "captions", "keywords"):
        c.json(f"search mode={mode}", f"/api/search?q=star&mode={mode}&k=3")
    c.json("search filtered", "/api/search?q=house&min_score=auto&order=date&date_from=1970-01-01&page=1&k=5")
    c.json("search without q (400)", "/api/search", status=400)
    c.json("image", f"/api/images/{image_id}")
    c.json("image unknown (404)", "/api/images/987654321", status=404)
    c.json("similar", f"/api/images/{image_id}/similar?k=5")
    c.request("thumb", f"/api/images/{image_id}/thumb")
    for size in (160, 320, 640):
        c.request(f"thumb size={size}", f"/api/images/{image_id}/thumb?size={size}")
    c.request("thumb bad size (400)", f"/api/images/{image_id}/thumb?size=7", status=400)
    c.request("file", f"/api/images/{image_id}/file")
    c.request("file range", f"/api/images/{image_id}/file", headers={"Range": "bytes=0-9"}, status=206)
    c.post_file("search by upload", "/api/search/image", "image", image_file, {"k": "5"})
    c.json("duplicates api", "/api/duplicates")
    c.json("duplicates api threshold", "/api/duplicates?threshold=0.9&page=0")
    # clip-retrieval's back end
    names = c.json("indices-list", "/indices-list")
    indice = names[0] if isinstance(names, list) and names else "glimpse"
    knn = {"indice_name": indice, "num_images": 5, "modality": "image"}
    c.post_json("knn-service text", "/knn-service", {**knn, "text": "a cat"})
    c.post_json("knn-service text deduplicate", "/knn-service", {**knn, "text": "a cat", "deduplicate": True})
    c.post_json("knn-service captions", "/knn-service", {**knn, "modality": "text", "text": "a cat"})
    c.post_json(
        "knn-service image", "/knn-service", {**knn, "image": base64.b64encode(image_file.read_bytes()).decode()}
    )
    dim = int(
        json.loads((ROOT / "models" / "glimpse-icons-distil" / "open_clip_config.json").read_text())["model_cfg"][
            "embed_dim"
        ]
    )
    c.post_json("knn-service embedding", "/knn-service", {**knn, "embedding_input": [1.0] + [0.0] * (dim - 1)})
    c.post_json(
        "knn-service image_url (off: 400)", "/knn-service", {**knn, "image_url": "http://127.0.0.1:9/x.png"}, status=400
    )
    c.post_json("metadata", "/metadata", {"indice_name": indice, "ids": [image_id, 987654321]})
    # pages, fragments and everything they link to
    pages = [
        "/",
        "/?q=cat",
        "/?q=cat&mode=keywords&order=date&min_score=auto",
        f"/?like={image_id}",
        f"/image/{image_id}",
        "/duplicates",
        "/duplicates?threshold=0.9",
    ]
    linked: list[str] = []
    for path in pages:
        _, _, html = c.request("page", path)
        linked += links(html)
    c.request("page unknown image (404)", "/image/987654321", status=404)
    c.json("fragment results", "/fragments/results?q=cat&page=1")
    c.json("fragment results like", f"/fragments/results?like={image_id}&page=1")
    c.post_file("fragment image upload", "/fragments/image", "image", image_file)
    _, _, metrics = c.request("metrics", "/metrics")
    if b"glimpse_" not in metrics:
        fail("metrics", "no glimpse_ metric in /metrics", metrics[:2000].decode("utf-8", "replace"))
    for path in ("/static/app.js", "/static/style.css", "/static/favicon.svg"):
        c.request("static", path)
    t0 = time.monotonic()
    targets = sorted(set(linked) - set(pages))
    for path in targets:
        c.request("linked from a page", path, quiet=True)
    ok(f"{len(targets)} links found on those pages (thumbnails, files, detail pages, assets)", t0)
    # every route the API document lists was requested
    for route in doc.get("paths", {}):
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", route) + "$"
        if not any(re.match(pattern, seen) for seen in c.seen):
            fail("openapi coverage", f"{route} is in /api/openapi.json but the smoke never requested it: add it")


def login_steps(c: Client) -> None:
    """A login added while the server runs applies at once: 401 without it, 200 with it, health stays open."""
    password = uuid.uuid4().hex
    glimpse("user add --password-stdin", "user", "add", "smoke", "--password-stdin", stdin=password + "\n")
    if "smoke" not in glimpse("user list", "user", "list"):
        fail("user list", "the user just added is not listed")
    c.request("login required (401)", "/", status=401, auth=False)
    c.json("health without login", "/api/health", auth=False)
    c.auth = "Basic " + base64.b64encode(f"smoke:{password}".encode()).decode()
    c.request("with login", "/?q=cat")
    c.json("with login", "/api/stats")
    glimpse("user remove", "user", "remove", "smoke")
    c.auth = None
    c.request("open again", "/")


def interrupted(signum, _frame) -> None:
    print(f"SMOKE FAILED: interrupted by {signal.Signals(signum).name}; stopping the server", flush=True)
    sys.exit(1)  # unwinds main's finally and the atexit handlers: the server is stopped, the folder removed


def main() -> int:
    global WORK, ENV
    WORK = Path(tempfile.mkdtemp(prefix="glimpse-smoke-"))
    keep = os.environ.get("SMOKE_KEEP") == "1"
    atexit.register(stop_server)
    if not keep:
        atexit.register(shutil.rmtree, WORK, True)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GLIMPSE_", "RAY_"))}
    env.update(
        GLIMPSE_HOME=str(WORK / "home"), GLIMPSE_CACHE_DIR=str(WORK / "cache"), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1"
    )
    ENV = env
    log_path = WORK / "serve.log"
    print(f"product smoke: {GLIMPSE} in {WORK}", flush=True)
    try:
        image_file = cli_steps()
        client = start_server(log_path)
        try:
            http_steps(client, image_file)
            login_steps(client)
        finally:
            t0 = time.monotonic()
            stop_server()
            ok("server stopped", t0)
        server_log = log_path.read_text("utf-8", "replace")
        if "Traceback" in server_log:
            fail("server log", "a traceback in the server's log (below)")
    except SmokeFailure as exc:
        print(f"SMOKE FAILED at {exc}", flush=True)
        if log_path.exists() and log_path.stat().st_size:  # the server had started: its log may say why
            print(f"--- server log ---\n{log_path.read_text('utf-8', 'replace')[-4000:]}\n--- end ---", flush=True)
        return 1
    print(f"product smoke passed in {time.monotonic() - STARTED:.0f}s", flush=True)
    return 0


WORK = Path()
ENV: dict[str, str] = {}

if __name__ == "__main__":
    sys.exit(main())
