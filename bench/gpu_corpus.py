"""The GPU benchmark's corpus: ``n`` distinct JPEG files made from ``base`` generated ones (bench/make_corpus.py).

Each copy carries its own COM segment, so every file hashes differently while the pixels repeat: a large
corpus costs the generation of ``base`` images only. Shared by bench/gpu.py and bench/gpu_check.py.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _with_comment(data: bytes, text: bytes) -> bytes:
    """The same JPEG with a COM segment right after SOI: distinct bytes, identical pixels."""
    assert data[:2] == b"\xff\xd8"
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + data[2:]


def gpu_corpus(root: Path, n: int, base: int, profile: str = "mixed") -> Path:
    out = root / f"gpu-corpus-{profile}-{n}-of-{base}"
    if out.exists() and len(list(out.glob("*.jpg"))) == n:
        return out
    src = root / f"gpu-base-{profile}-{base}"
    if len(list(src.glob("*.jpg"))) < base:
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, str(REPO / "bench" / "make_corpus.py"), str(src), "-n", str(base), "--profile", profile],
            check=True,
        )
        log(f"generated {base} base JPEGs in {time.perf_counter() - t0:.0f}s")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    bases = [p.read_bytes() for p in sorted(src.glob("*.jpg"))[:base]]
    for i in range(n):
        (out / f"img_{i:07d}.jpg").write_bytes(_with_comment(bases[i % base], b"glimpse bench copy %d" % i))
    return out
