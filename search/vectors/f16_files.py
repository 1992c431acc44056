"""The float16 vectors a compact index (IVF-PQ) re-ranks its candidates against, on disk.

An index version's vectors are one or more ``.npy`` segments, read in order as one run of rows, and
a row map from the index's sorted ids to rows in that run. A full build writes one segment in id
order (the map is the identity and is not stored); an incremental publish hard-links the live
version's segments (published files are never written) and appends one segment holding the vectors
it added, so a nightly run over a 10M corpus writes megabytes, not the whole corpus again. Rows of
deleted ids stay in their segments until the dead share makes a rewrite worth it (``compact``).

Rows are read with ``pread``, not through a memory map: a map's page faults pull in the
neighbouring cached pages too (fault-around), so a server's or a publish's resident set grew by
~64 KiB per candidate, gigabytes at 10M, while a read copies just the row.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np

# Rewrite the segments into one when dead rows reach this share of the live ones, or past this many
# segments (each is an open file in every server).
DEAD_SHARE = 0.25
MAX_SEGMENTS = 16


def _header(f) -> tuple[tuple[int, int], int]:
    major, _ = np.lib.format.read_magic(f)
    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(f)
    if dtype != np.float16 or len(shape) != 2:
        raise ValueError(f"{f.name}: expected a 2-d float16 array, found {dtype} {shape}")
    return shape, f.tell()


class F16Writer:
    """A ``.npy`` of ``rows`` float16 vectors written chunk by chunk with plain writes (a writable
    memory map would count every page written in the publish's RSS). Rows not written stay zero."""

    def __init__(self, path: Path, rows: int, dim: int):
        self.f = open(path, "xb")  # never through an existing name: it may be a link to a live file
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)), "fortran_order": False}
        np.lib.format.write_array_header_1_0(self.f, dict(header, shape=(rows, dim)))
        self.end = self.f.tell() + rows * dim * 2
        self.rows = rows

    def write(self, vecs: np.ndarray) -> None:
        self.f.write(np.ascontiguousarray(vecs, dtype=np.float16).tobytes())
        if self.f.tell() > self.end:
            raise RuntimeError("more vectors than the snapshot counted")

    def close(self) -> None:
        self.f.truncate(self.end)
        self.f.close()


class F16Rows:
    """Row ``rows[i]`` of the segments' run is the vector of the index's ``i``-th sorted id."""

    def __init__(self, paths: list[Path], rows: np.ndarray | None = None):
        self.paths = [Path(p) for p in paths]
        self.files = [open(p, "rb") for p in self.paths]
        shapes, offsets = zip(*(_header(f) for f in self.files))
        self.offsets = np.asarray(offsets, dtype=np.int64)  # where each segment's rows begin in its file
        dims = {s[1] for s in shapes}
        if len(dims) != 1:
            raise ValueError(f"segments of different widths: {sorted(dims)}")
        self.dim = dims.pop()
        self.starts = np.cumsum([0] + [s[0] for s in shapes])  # first run row of each segment, then the end
        self.rows = rows
        self.row_bytes = self.dim * 2

    @property
    def total(self) -> int:
        """Rows in all segments, dead ones included."""
        return int(self.starts[-1])

    def __len__(self) -> int:
        return self.total if self.rows is None else len(self.rows)

    def take(self, pos: np.ndarray) -> np.ndarray:
        """float16 vectors of the ids at sorted-id positions ``pos`` (any shape, flattened)."""
        pos = np.asarray(pos, dtype=np.int64).ravel()
        run = pos if self.rows is None else self.rows[pos]
        seg = np.searchsorted(self.starts, run, side="right") - 1
        out = bytearray(len(run) * self.row_bytes)
        view = memoryview(out)
        n, fds = self.row_bytes, [f.fileno() for f in self.files]
        rows = list(zip(seg.tolist(), (self.offsets[seg] + (run - self.starts[seg]) * n).tolist()))
        if len(rows) > 1 and hasattr(os, "posix_fadvise"):
            # Ask for every row first, so the kernel can read the ones not cached together rather than one
            # after another: 400 cold rows at 10M took 55 ms instead of 95 on the benchmark machine.
            for s, off in rows:
                os.posix_fadvise(fds[s], off, n, os.POSIX_FADV_WILLNEED)
        for j, (s, off) in enumerate(rows):
            if os.preadv(fds[s], [view[j * n : (j + 1) * n]], off) != n:
                raise OSError(errno.EIO, f"short read in {self.paths[s]}")
        return np.frombuffer(out, dtype=np.float16).reshape(len(run), self.dim)

    def close(self) -> None:
        for f in self.files:
            f.close()


def prefetch(paths: list[Path], share_of_free: float = 0.5, step: int = 64 << 20) -> int:
    """Read ``paths`` into the page cache (not this process's memory), a step at a time, while they fit
    in ``share_of_free`` of the memory available at the start; returns the bytes read.

    A server runs this in the background: at 10M images a query re-ranks 400+ rows read at random from
    10 GB, ~100 ms from disk and ~4 ms from the page cache. The kernel may drop these pages again under
    memory pressure; nothing here pins them.

    The file is copied to /dev/null inside the kernel (``sendfile``: no copy through this process).
    ``posix_fadvise(WILLNEED)`` is not enough: Linux caps each call at the device's read-ahead window
    (8 MiB here), so asking for 10 GB in 256 MiB steps cached 0.3 GB; ``sendfile`` cached the 9.5 GiB
    file in 31 s with 3.8 s of system CPU."""
    free = _available()
    budget = share_of_free * free if free is not None else float("inf")
    done = 0
    with open(os.devnull, "wb") as null:
        for path in paths:
            try:
                f = open(path, "rb")
            except OSError:
                return done  # pruned meanwhile
            with f:
                size = os.fstat(f.fileno()).st_size
                while done < budget and f.tell() < size:
                    count = min(step, size - f.tell())
                    if looks_cached(f.fileno(), f.tell(), count):  # a restart, a hot swap: no re-read
                        f.seek(count, os.SEEK_CUR)
                        n = count
                    else:
                        n = _to_null(f, null, count)
                    if n <= 0:
                        break
                    done += n
    return done


def looks_cached(fd: int, start: int, length: int, probes: int = 16) -> bool:
    """Whether ``probes`` bytes spread over ``[start, start + length)`` are all in the page cache: a read
    with ``RWF_NOWAIT`` fails rather than wait for the disk. Re-reading 10 GB that are cached already cost
    the first queries after a restart ~20 ms each on 2 cores. False where the platform cannot tell."""
    nowait = getattr(os, "RWF_NOWAIT", None)
    if nowait is None or length <= 0:
        return False
    one = bytearray(1)
    for i in range(probes):
        try:
            if os.preadv(fd, [one], start + (length - 1) * i // max(1, probes - 1), nowait) != 1:
                return False
        except OSError:  # EAGAIN: on disk; EOPNOTSUPP: a filesystem without it
            return False
    return True


def _to_null(f, null, count: int) -> int:
    """Read ``count`` bytes of ``f`` from its position, as cheaply as the platform allows."""
    try:
        n = os.sendfile(null.fileno(), f.fileno(), f.tell(), count)
        f.seek(n, os.SEEK_CUR)
        return n
    except (OSError, AttributeError):  # no sendfile from a file to /dev/null here
        return len(f.read(min(count, 8 << 20)))


def _available() -> int | None:
    """MemAvailable in bytes (Linux), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to ``src`` (both are never written again), or a copy where the
    filesystem has no hard links."""
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        shutil.copyfile(src, dst)


def rows_map_path(folder: Path, name: str) -> Path:
    return folder / f"{name}.f16rows.npy"


def open_f16(folder: Path, name: str, spec: dict) -> F16Rows:
    """The re-rank vectors of index ``name`` in a published version ``folder`` (``spec``: its manifest
    entry; versions from before segments hold one ``NAME.f16.npy`` in id order)."""
    files = spec.get("f16_files") or [f"{name}.f16.npy"]
    rows_map = rows_map_path(folder, name)
    return F16Rows([folder / f for f in files], np.load(rows_map) if rows_map.exists() else None)


def compact(src: F16Rows, out: Path, chunk: int = 50_000) -> None:
    """Write ``src``'s live rows, in id order, as one segment at ``out``."""
    writer = F16Writer(out, len(src), src.dim)
    for start in range(0, len(src), chunk):
        writer.write(src.take(np.arange(start, min(len(src), start + chunk))))
    writer.close()
