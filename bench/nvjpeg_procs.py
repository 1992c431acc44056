#!/usr/bin/env python3
"""Does nvJPEG decode faster from several processes at once? (CUDA machine only.)

torchvision keeps one nvJPEG decoder per process behind a lock, so `glimpse index`
decodes one batch at a time. This measures the aggregate decode + resize rate of
1, 2 and 4 processes, each decoding the JPEG files of DIR (cycled to --images) from memory:

    python bench/nvjpeg_procs.py DIR [--images 3000] [--procs 1,2,4]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

STEPS = [
    {"op": "resize", "size": 224, "interpolation": "bicubic"},
    {"op": "center_crop", "size": [224, 224], "fill": 0},
]


def _worker(paths, batch, start, out):
    import torch

    from indexer.gpu_decode import decode_batch

    datas = [torch.frombuffer(bytearray(Path(p).read_bytes()), dtype=torch.uint8) for p in paths]
    decode_batch(datas[:batch], [None] * batch, STEPS, "cuda")  # warm-up
    torch.cuda.synchronize()
    start.wait()
    t0 = time.perf_counter()
    for i in range(0, len(datas), batch):
        decode_batch(datas[i : i + batch], [None] * len(datas[i : i + batch]), STEPS, "cuda")
    torch.cuda.synchronize()
    out.put((len(datas), time.perf_counter() - t0))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--procs", default="1,2,4")
    args = ap.parse_args(argv)
    files = sorted(str(p) for p in Path(args.folder).glob("*.jpg"))
    paths = (files * (args.images // max(1, len(files)) + 1))[: args.images]  # decode cost does not care
    ctx = mp.get_context("spawn")  # each process its own CUDA context and nvJPEG decoder
    for n in (int(x) for x in args.procs.split(",")):
        start, out = ctx.Barrier(n + 1), ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(paths, args.batch, start, out)) for _ in range(n)]
        for p in procs:
            p.start()
        start.wait()
        t0 = time.perf_counter()
        results = [out.get() for _ in procs]
        wall = time.perf_counter() - t0
        for p in procs:
            p.join()
        total = sum(r[0] for r in results)
        print(
            f"{n} process(es): {total / wall:,.0f} img/s aggregate "
            f"(per process {', '.join(f'{c / s:,.0f}' for c, s in results)})",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
