"""The (re)index job: scan → diff → hash → reuse → embed → write → publish.

Rows and vectors are committed one batch per transaction, so a crash loses at
most one batch and the next run resumes where this one stopped. The FAISS
index is rebuilt from stored vectors and published atomically at the end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sqlite3
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
from sqlalchemy import delete, insert, select, update

from indexer.captions import MAX_CAPTION_CHARS, cap_caption, read_manifest, sidecar_captions
from indexer.disk import DiskFull, disk_full_cause, is_disk_full
from indexer.hashing import file_hash
from indexer.lock import JobLock
from indexer.progress import bar
from indexer.run_warnings import RunWarnings
from indexer.scan import FileEntry, LinkPolicy, walk_images
from search.errors import GlimpseError
from search.files import shown
from search.model_spec import ModelSpec
from search.ort_session import cpu_threads, runtime_setting
from search.index import IndexDir
from search.paths import Paths
from search.store import CaptionRow, ImageRow, Root, Store, fs_str, pack_vector, utcnow

log = logging.getLogger("glimpse.indexer")


class ModelMismatch(GlimpseError):
    """Indexing with a different model than the stored vectors were made with."""


@dataclass
class Options:
    model: str | None = None
    pretrained: str | None = None
    reembed: bool = False
    captions: str | None = None
    batch_size: int | None = None
    workers: int | None = None
    device: str | None = None
    quantize: str | None = None  # "int8": ONNX Runtime int8 image tower (CPU)
    decode: str | None = None  # where JPEGs are decoded: auto (GPU when encoding on one), gpu, cpu
    kind: str = "index"
    # The roots being indexed accept symlinked files leading anywhere; None keeps what each root recorded.
    follow_external_links: bool | None = None


@dataclass
class Counts:
    """What a job did. Committed work (new, changed, moved, deleted, failed, embedded, captions) is
    counted in the transaction that commits it, so the job row never says more or less than the
    database holds, however the job ends."""

    scanned: int = 0
    new: int = 0
    changed: int = 0
    moved: int = 0
    deleted: int = 0
    failed: int = 0
    unchanged: int = 0
    embedded: int = 0
    captions: int = 0
    unavailable_roots: list[str] = field(default_factory=list)

    def as_job_fields(self) -> dict:
        return {k: getattr(self, k) for k in JOB_FIELDS}


JOB_FIELDS = ("scanned", "new", "changed", "moved", "deleted", "failed", "unchanged", "embedded", "captions")


# What the diff needs of one stored image row: (id, size, mtime, content hash,
# done = has a vector or failed for good, root id, canonical location, failed).
# A plain tuple: the nightly no-op run builds one per file, and 100k dataclasses
# cost more than the scan.
RowState = tuple[int, int, float, "str | None", int, "int | None", "str | None", int]
ID, SIZE, MTIME, HASH, DONE, ROOT, REAL, FAILED = range(8)


def _same_stat(state: RowState, entry: FileEntry) -> bool:
    return state[SIZE] == entry.size and abs(state[MTIME] - entry.mtime) < 1e-6


def _is_empty_dir(path: str) -> bool:
    try:
        with os.scandir(path) as it:
            return next(it, None) is None
    except OSError:
        return True



class Indexer:
    """Runs one job against one GLIMPSE_HOME. Use :func:`run_job` for the locked entry point."""

    def __init__(self, paths: Paths, opts: Options, encoder: "Encoder | None" = None):
        self.paths = paths
        self.opts = opts
        self.store = Store(paths.db)
        self._encoder = encoder
        self.counts = Counts()
        self.links = LinkPolicy()  # where symlinked files and sidecars may lead; set by the scan
        self.warnings = RunWarnings()
        self.job_id: int | None = None  # the jobs row kept in step with every commit (run_job sets it)
        self._changed_ids: set[int] = set()  # rows the diff found changed: their re-embedding counts as "changed"

    @contextlib.contextmanager
    def _commit(self):
        """One write transaction, yielding ``(session, delta)``: count into ``delta`` what the
        transaction commits. The job row gets the new counts in the same transaction (a kill -9
        leaves it true), and ``self.counts`` gets them only once the commit succeeded."""
        delta = dict.fromkeys(JOB_FIELDS, 0)
        with self.store.session() as s, s.begin():
            yield s, delta
            if self.job_id is not None and any(delta.values()):
                self.store.set_job_counts(s, self.job_id, **{k: getattr(self.counts, k) + v for k, v in delta.items()})
        for k, v in delta.items():
            setattr(self.counts, k, getattr(self.counts, k) + v)

    # ------------------------------------------------------------ model
    def resolve_model(self) -> ModelSpec:
        """The requested model, checked against the one that made the stored vectors."""
        row = self.store.get_model()
        if self.opts.model is None and self.opts.pretrained is None and row is not None:
            return ModelSpec(row.name, row.pretrained)
        spec = ModelSpec.parse(self.opts.model, self.opts.pretrained)
        if row is not None and row.fingerprint != spec.fingerprint():
            if not self.opts.reembed:
                raise ModelMismatch(
                    f"the index was built with {row.name} ({row.pretrained or row.fingerprint}) but {spec.describe()} "
                    "was requested; vectors from different models cannot be mixed. Re-run with --reembed to "
                    "re-embed every image with the new model, or leave out --model to keep the current one."
                )
            log.warning("model changed to %s: every image and caption will be re-embedded", spec.describe())
            self.store.drop_all_vectors()
            self.store.set_model(spec.name, spec.pretrained, spec.fingerprint(), 0)
        return spec

    def encoder(self, spec: ModelSpec) -> "Encoder":
        if self._encoder is None:
            from search.index_encoder import open_index_encoder  # only when something needs embedding

            streams = encode_streams(self.opts.device)
            self._encoder = open_index_encoder(spec, device=self.opts.device, quantize=self.opts.quantize,
                                               ort_threads=max(1, cpu_threads() // streams))
        row = self.store.get_model()
        if row is None or row.dim != self._encoder.dim or row.fingerprint != spec.fingerprint():
            self.store.set_model(spec.name, spec.pretrained, spec.fingerprint(), self._encoder.dim)
        return self._encoder

    # ------------------------------------------------------------ run
    def run(self, roots: Sequence[str], force_publish: bool = False) -> Counts:
        """Bring the store and the index up to date with ``roots``.

        ``force_publish``: publish even if this run changed nothing, because an
        earlier run may have committed batches and died before publishing.
        """
        spec = self.resolve_model()
        manifest = read_manifest(self.opts.captions, roots, warn=self.warnings.add) if self.opts.captions else {}
        root_ids = {os.path.abspath(r): self.store.ensure_root(os.path.abspath(r), self.opts.follow_external_links)
                    for r in roots}
        states = self._states()
        seen, available = self._scan(root_ids, {s[ROOT] for s in states.values()})
        plan = self._diff(seen, available, states)
        del states
        self._apply_moves_and_deletes(plan)
        to_embed = plan["embed"]
        if to_embed:
            self._changed_ids = plan["changed_ids"]
            self._embed(spec, to_embed, root_ids)
        self._sync_captions(spec, manifest, plan["caption_paths"])
        self._publish(spec, force_publish)
        self._prepare_query_bundle()
        return self.counts

    def check_options(self) -> None:
        """Refuse `--decode gpu` before scanning when no GPU decoder can run (a mistake in a cron line
        should fail in a second, not after the scan and the model load)."""
        if decode_mode(self.opts.decode) == "gpu":
            from indexer.gpu_decode import gpu_jpeg_available
            from search.encoder import pick_device

            device = pick_device(self.opts.device)
            if not gpu_jpeg_available(device):
                raise ValueError(f"--decode gpu: no nvJPEG decoder for device {device} "
                                 "(needs a CUDA GPU and torchvision built with nvJPEG)")

    def _prepare_query_bundle(self) -> None:
        """With the model already loaded in torch, write the ONNX query bundle the server
        loads without torch (once per model; see search.query_bundle)."""
        enc = self._encoder
        if enc is None or enc.device != "cpu" or runtime_setting() == "torch":
            return
        from search.query_bundle import ensure_bundle

        try:
            ensure_bundle(enc)
        except Exception as exc:  # noqa: BLE001 - the index is published; the server falls back to torch
            log.warning("no ONNX query bundle (%s: %s); the server will query in torch", exc.__class__.__name__, exc)

    def _states(self) -> dict[str, RowState]:
        """Every image row, loaded once: the diff's only read of the database.

        Straight through the DB-API cursor: ORM row objects for every file would
        make the no-op nightly run several times slower.
        """
        with self.store.engine.connect() as conn:
            cur = conn.connection.dbapi_connection.cursor()
            try:
                cur.execute("SELECT path, id, size, mtime, content_hash, vector IS NOT NULL OR status = 'failed', "
                            "root_id, real_path, status = 'failed' FROM images")
                # A BLOB path is a file name that is not UTF-8 (search.store.FsPath).
                return {fs_str(r[0]): r[1:] if r[7].__class__ is not bytes else (*r[1:7], fs_str(r[7]), r[8])
                        for r in cur}
            finally:
                cur.close()

    def _scan(self, root_ids: dict[str, int], roots_with_rows: set[int | None]
              ) -> tuple[dict[str, tuple[FileEntry, int]], set[int]]:
        seen: dict[str, tuple[FileEntry, int]] = {}
        available: set[int] = set()
        known = {r.id: r for r in self.store.roots()}
        # Symlinked files (and sidecars) may lead into any indexed folder, or anywhere under a root that opted in.
        self.links = LinkPolicy(areas=[os.path.realpath(r.path) for r in known.values()],
                                open_roots=[r.path for r in known.values() if r.follow_external_links])
        progress = bar(None, "scanning", unit="file")
        for root, root_id in root_ids.items():
            is_dir = os.path.isdir(root)
            entries = list(walk_images(root, self.links)) if is_dir else []
            if not is_dir or (not entries and root_id in roots_with_rows and _is_empty_dir(root)):
                # Missing, or an empty mount point: keep its images, don't call them deleted.
                log.warning("root %s is missing or unmounted: its images are kept and marked unavailable", root)
                self.store.set_root_available(root_id, False)
                self.counts.unavailable_roots.append(root)
                continue
            if known.get(root_id) is not None and not known[root_id].available:
                log.info("root %s is available again", root)
            self.store.set_root_available(root_id, True)
            available.add(root_id)
            for e in entries:
                seen.setdefault(e.path, (e, root_id))
            progress.update(len(entries))
        progress.close()
        self.counts.scanned = len(seen)
        log.info("scanned %d files in %d folders", len(seen), len(root_ids))
        return seen, available

    def _diff(self, seen: dict[str, tuple[FileEntry, int]], available: set[int], states: dict[str, RowState]) -> dict:
        new, changed, embed, caption_paths, relink, refused = [], [], [], [], [], []
        unchanged = 0
        for path, (entry, root_id) in seen.items():
            state = states.get(path)
            if entry.error is not None:  # never read (a symlink leading outside, a dangling one, a FIFO…)
                if state is not None and state[FAILED] and _same_stat(state, entry):
                    unchanged += 1
                else:
                    refused.append((entry, root_id, None if state is None else state[ID]))
            elif state is None:
                new.append((entry, root_id))
            elif _same_stat(state, entry):
                if state[DONE]:
                    unchanged += 1
                    if state[REAL] != entry.real_path:
                        relink.append((state[ID], entry))  # same file, reached another way
                else:
                    embed.append((entry, root_id, state[ID], None))  # after a model change, or a crash
            else:
                changed.append((entry, root_id, state[ID]))
        self.counts.unchanged += unchanged
        # Rows under scanned roots that were not seen: gone (or moved; the hash decides).
        gone = {p: states[p] for p in states.keys() - seen.keys() if states[p][ROOT] in available}
        # Hash up front only files that could turn out to be a move, a copy or a touch: equal bytes
        # need an equal size. Every other file is hashed by the decode workers, which read it anyway
        # (a fresh index of a big folder would otherwise read every byte twice).
        sizes_with_vectors = {st[SIZE] for st in states.values() if st[HASH] and st[DONE]}
        hashes = self._hash([e for e, _ in new if e.size in sizes_with_vectors]
                            + [e for e, _, row_id in changed if states[e.path][SIZE] == e.size])
        touch, changed_ids = [], set()
        for entry, root_id, row_id in changed:
            h, state = hashes.get(entry.path), states[entry.path]
            if h is not None and h == state[HASH] and state[DONE]:
                touch.append((row_id, entry))  # same bytes, new mtime: keep the vector
                self.counts.unchanged += 1
            else:
                changed_ids.add(row_id)
                embed.append((entry, root_id, row_id, h))
                caption_paths.append(entry.path)
        gone_by_hash: dict[str, list[tuple[str, int]]] = {}
        for p, st in gone.items():
            if st[HASH] and st[DONE]:
                gone_by_hash.setdefault(st[HASH], []).append((p, st[ID]))
        moves, copies = [], []
        reusable = self.store.images_by_hash([h for h in hashes.values() if h]) if new else {}
        for entry, root_id in new:
            h = hashes.get(entry.path)
            if h and gone_by_hash.get(h):
                old_path, row_id = gone_by_hash[h].pop()
                gone.pop(old_path)
                moves.append((row_id, entry, root_id))
            elif h and h in reusable:
                copies.append((reusable[h].id, entry, root_id, h))
            else:
                embed.append((entry, root_id, None, h))
            caption_paths.append(entry.path)
        return {"touch": touch, "moves": moves, "copies": copies, "gone": {p: s[ID] for p, s in gone.items()},
                "embed": embed, "changed_ids": changed_ids, "caption_paths": caption_paths,
                "relink": relink, "refused": refused}

    def _hash(self, entries: list[FileEntry]) -> dict[str, str | None]:
        """Content hash of each entry's canonical file, by walked path."""
        if not entries:
            return {}
        progress = bar(len(entries), "hashing", unit="file")
        out = {}
        with ThreadPoolExecutor(max_workers=4) as pool:
            for entry, h in zip(entries, pool.map(file_hash, [e.real_path or e.path for e in entries])):
                out[entry.path] = h
                progress.update(1)
        progress.close()
        return out

    def _apply_moves_and_deletes(self, plan: dict) -> None:
        with self._commit() as (s, delta):
            for row_id, entry in plan["touch"]:
                s.execute(update(ImageRow).where(ImageRow.id == row_id).values(
                    size=entry.size, mtime=entry.mtime, real_path=entry.real_path))
            for row_id, entry in plan["relink"]:
                s.execute(update(ImageRow).where(ImageRow.id == row_id).values(real_path=entry.real_path))
            for row_id, entry, root_id in plan["moves"]:
                s.execute(update(ImageRow).where(ImageRow.id == row_id).values(
                    path=entry.path, real_path=entry.real_path, root_id=root_id, size=entry.size, mtime=entry.mtime))
            for src_id, entry, root_id, h in plan["copies"]:
                src = s.get(ImageRow, src_id)
                s.add(ImageRow(path=entry.path, real_path=entry.real_path, root_id=root_id, size=entry.size,
                               mtime=entry.mtime, content_hash=h, width=src.width, height=src.height,
                               format=src.format, taken_at=src.taken_at, status="indexed", vector=src.vector))
            refused_rows = []
            for entry, root_id, row_id in plan["refused"]:
                log.warning("failed: %s: %s", entry.path, entry.error)
                # The walk's reason; nothing read, nothing kept from what the path held before.
                values = dict(path=entry.path, real_path=None, root_id=root_id, size=entry.size, mtime=entry.mtime,
                              content_hash=None, width=None, height=None, format=None, taken_at=None,
                              status="failed", error=entry.error, vector=None, indexed_at=utcnow())
                if row_id is None:
                    refused_rows.append(values)
                else:
                    s.execute(update(ImageRow).where(ImageRow.id == row_id).values(**values))
            if refused_rows:
                s.execute(insert(ImageRow), refused_rows)
            gone_ids = list(plan["gone"].values())
            for i in range(0, len(gone_ids), 500):
                s.execute(delete(CaptionRow).where(CaptionRow.image_id.in_(gone_ids[i : i + 500])))
                s.execute(delete(ImageRow).where(ImageRow.id.in_(gone_ids[i : i + 500])))
            refused_before = len(plan["refused"]) - len(refused_rows)  # rows that held something else
            delta.update(moved=len(plan["moves"]), new=len(plan["copies"]) + len(refused_rows),
                         changed=refused_before, failed=len(plan["refused"]), deleted=len(gone_ids))
        if plan["moves"] or plan["copies"]:
            log.info("reused vectors for %d moved and %d copied files", len(plan["moves"]), len(plan["copies"]))

    def _embed(self, spec: ModelSpec, items: list, root_ids: dict) -> None:
        """Decode (workers) -> encode (one stream per core on CPU) -> write (a writer thread), overlapped.

        On CPU each encode stream is one single-threaded ONNX Runtime call on its own
        batch: no thread barriers inside a batch, so a decode worker taking a core
        stalls one stream instead of both threads of a shared call. The writer
        commits batch N while the encoders work on the next ones, in input order;
        a crash loses at most the batches not yet committed, never a committed one.
        """
        from indexer.load import cpu_decode_workers, default_workers, iter_batches

        enc = self.encoder(spec)
        on_gpu = enc.device.startswith("cuda")
        batch_size = self.opts.batch_size or (256 if on_gpu else CPU_BATCH)
        progress = bar(len(items), "embedding")
        paths = [entry.real_path or entry.path for entry, *_ in items]  # read where the walk checked it
        want_hash = [h is None for *_, h in items]
        # GPU: three batches in flight, so nvJPEG decodes, the model encodes and the host prepares
        # side by side (H100, 1024x768 JPEGs: 3,082 img/s with two, 3,458 with three; BENCHMARKS.md).
        streams = encode_streams(self.opts.device) if enc.device == "cpu" else \
            max(1, int(os.environ.get("GLIMPSE_ENCODE_STREAMS") or 3))
        gpu_steps = gpu_decode_steps(enc, self.opts.decode)
        log.info("decoding JPEGs %s", "on the GPU (nvJPEG)" if gpu_steps is not None else "in worker processes")
        busy = {"wait": 0.0, "decode": 0.0, "encode": 0.0, "write": 0.0}  # seconds, summed over threads
        busy_lock = threading.Lock()
        t_start = time.perf_counter()

        def add_busy(stage: str, seconds: float) -> None:
            with busy_lock:
                busy[stage] += seconds

        def encode(batch):
            t0 = time.perf_counter()
            ok, pixels = batch_pixels(batch, enc, gpu_steps)
            t1 = time.perf_counter()
            vectors = enc.encode_pixels(pixels) if ok else np.zeros((0, enc.dim))
            add_busy("decode", t1 - t0)
            add_busy("encode", time.perf_counter() - t1)
            return ok, vectors

        def timed_write(*a):
            t0 = time.perf_counter()
            self._write_batch(*a)
            add_busy("write", time.perf_counter() - t0)

        inflight: deque = deque()  # (batch, future of (ok, vectors)), in input order
        pending = None  # the write in progress

        def write_oldest() -> None:
            nonlocal pending
            batch, fut = inflight.popleft()
            ok, vectors = fut.result()
            if pending is not None:
                pending.result()  # re-raises a write error; keeps at most one batch being written
            pending = writer.submit(timed_write, items, batch, ok, vectors, progress)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="glimpse-writer") as writer, \
                ThreadPoolExecutor(max_workers=streams, thread_name_prefix="glimpse-encode") as encoders, \
                contextlib.ExitStack() as stack:
            try:
                if self.opts.workers is not None:
                    workers = self.opts.workers
                elif enc.device == "cpu":
                    workers = cpu_decode_workers(enc.image_gflops())
                else:
                    workers = default_workers(on_gpu)
                if gpu_steps is not None and self.opts.workers is None:
                    workers = raw_batch_workers(workers, batch_size, [entry.size for entry, *_ in items])
                log.info("%d decode worker process(es)", workers)
                batches = stack.enter_context(contextlib.closing(iter_batches(
                    paths, enc.pil_transform, enc.image_size, batch_size, workers, want_hash=want_hash,
                    raw_jpeg=gpu_steps is not None)))
                if len(items) >= batch_size:  # the ONNX session opens while the (already started) workers decode
                    threading.Thread(target=enc.start_batch_runtime, name="glimpse-ort-start", daemon=True).start()
                while True:
                    t0 = time.perf_counter()
                    batch = next(batches, None)
                    add_busy("wait", time.perf_counter() - t0)
                    if batch is None:
                        break
                    inflight.append((batch, encoders.submit(encode, batch)))
                    while len(inflight) >= streams:
                        write_oldest()
                while inflight:
                    write_oldest()
                if pending is not None:
                    pending.result()
            except BaseException:
                # Let the write in progress finish; batches still encoding are dropped (the next run embeds them).
                for _, fut in inflight:
                    fut.cancel()
                if pending is not None and not pending.done():
                    pending.result()
                raise
        progress.close()
        took = time.perf_counter() - t_start
        # Which stage bounds the run: the one whose busy time is closest to the wall time.
        log.info("embedded %d images in %.1fs (%.1f img/s); busy: waiting for decoded batches %.1fs, %s %.1fs, "
                 "encoder %.1fs, database writes %.1fs", len(items), took, len(items) / max(took, 1e-9), busy["wait"],
                 "nvJPEG decode" if gpu_steps is not None else "stacking", busy["decode"], busy["encode"],
                 busy["write"])

    def _write_batch(self, items: list, batch: list, ok: list, vectors: np.ndarray, progress) -> None:
        vec_of = {b.index: v for b, v in zip(ok, vectors)}
        new_rows = []  # one executemany: ORM objects cost more than the encoder on a GPU
        with self._commit() as (s, delta):
            for b in batch:
                entry, root_id, row_id, h = items[b.index]
                if h is None:
                    # A file refused before it was read (size cap, no image header) is not read now either.
                    h = b.content_hash or (None if b.error else file_hash(entry.real_path or entry.path))
                values = dict(path=entry.path, real_path=entry.real_path, root_id=root_id, size=entry.size,
                              mtime=entry.mtime,
                              content_hash=h, indexed_at=utcnow(),
                              width=b.meta.get("width"), height=b.meta.get("height"),
                              format=b.meta.get("format"), taken_at=b.meta.get("taken_at"))
                if b.error:
                    values.update(status="failed", error=shown(b.error), vector=None)
                    delta["failed"] += 1
                    log.warning("failed: %s: %s", entry.path, b.error)
                else:
                    values.update(status="indexed", error=None, vector=pack_vector(vec_of[b.index]))
                    delta["embedded"] += 1
                if row_id is None:
                    new_rows.append(values)
                    delta["new"] += 1
                else:
                    s.execute(update(ImageRow).where(ImageRow.id == row_id).values(**values))
                    delta["changed"] += row_id in self._changed_ids
            if new_rows:
                s.execute(insert(ImageRow), new_rows)
        progress.update(len(batch))

    def _sync_captions(self, spec: ModelSpec, manifest: dict[str, list[str]], new_paths: Iterable[str]) -> None:
        """Store manifest + sidecar captions for indexed images; embed the ones without vectors."""
        wanted: dict[str, list[tuple[str, str]]] = {}
        for path in new_paths:
            caps = sidecar_captions(path, self.links.allows)
            if caps:
                wanted.setdefault(path, []).extend((self._capped(path, c, "sidecar"), "sidecar") for c in caps)
        for path, caps in manifest.items():
            wanted.setdefault(path, []).extend((self._capped(path, c, "manifest"), "manifest") for c in caps)
        if wanted:
            with self.store.session() as s, s.begin():
                ids = dict(s.execute(select(ImageRow.path, ImageRow.id).where(ImageRow.path.in_(list(wanted)))).all()) \
                    if len(wanted) < 30_000 else dict(s.execute(select(ImageRow.path, ImageRow.id)).all())
                missing = [p for p in wanted if p not in ids]
                if missing:
                    log.warning("%d caption entries name images that are not indexed (first: %s)", len(missing), missing[0])
                have = set(s.execute(select(CaptionRow.image_id, CaptionRow.text).where(
                    CaptionRow.image_id.in_(list(ids.values())))).all()) if len(ids) < 30_000 else \
                    set(s.execute(select(CaptionRow.image_id, CaptionRow.text)).all())
                for path, caps in wanted.items():
                    image_id = ids.get(path)
                    if image_id is None:
                        continue
                    for text, source in caps:
                        if (image_id, text) not in have:
                            have.add((image_id, text))
                            s.add(CaptionRow(image_id=image_id, text=text, source=source))
        with self.store.session() as s:
            todo = s.execute(select(CaptionRow.id, CaptionRow.text).where(CaptionRow.vector.is_(None))).all()
        if not todo:
            return
        enc = self.encoder(spec)
        progress = bar(len(todo), "captions", unit="cap")
        for i in range(0, len(todo), 256):
            chunk = todo[i : i + 256]
            vecs = enc.encode_texts([t for _, t in chunk])
            with self._commit() as (s, delta):
                for (cid, _), v in zip(chunk, vecs):
                    s.execute(update(CaptionRow).where(CaptionRow.id == cid).values(vector=pack_vector(v)))
                delta["captions"] += len(chunk)
            progress.update(len(chunk))
        progress.close()

    def _capped(self, path: str, caption: str, source: str) -> str:
        """A caption as stored: cut to MAX_CAPTION_CHARS, with a warning when it was longer."""
        if len(caption) > MAX_CAPTION_CHARS:
            self.warnings.add(f"{path}: {source} caption cut from {len(caption):,} to {MAX_CAPTION_CHARS:,} characters")
        return cap_caption(caption)

    def _publish(self, spec: ModelSpec, force: bool = False) -> str | None:
        index_dir = IndexDir(self.paths.index)
        live = index_dir.current_version()
        # Moves and touches keep ids and vectors: the live index is still right.
        changed = force or any((self.counts.new, self.counts.changed, self.counts.deleted,
                                self.counts.embedded, self.counts.captions, self.counts.failed))
        if live and not changed:
            log.info("nothing changed; index version %s stays live", live)
            return live
        row = self.store.get_model()
        dim = row.dim if row and row.dim else self.encoder(spec).dim
        img_vecs, img_ids = self.store.image_vectors(dim)
        cap_vecs, cap_ids = self.store.caption_vectors(dim)
        try:
            return index_dir.publish(img_vecs, img_ids, cap_vecs, cap_ids, {
                "model": spec.name, "pretrained": spec.pretrained, "fingerprint": spec.fingerprint(), "dim": dim,
            })
        except (OSError, RuntimeError) as exc:
            if is_disk_full(exc):
                raise DiskFull(self.paths.index, "publishing the index") from exc
            raise


# CPU: each encode stream runs its own single-threaded batch. 16 beats 32 on a 2-core EPYC
# (ViT-B-32 ONNX, 2 streams: 18.8 vs 18.4 img/s encoder-only; the last batch also leaves
# one core idle for half as long), and 8 gained no more end to end (BENCHMARKS.md).
CPU_BATCH = 16


def encode_streams(device: str | None) -> int:
    """Concurrent encoder calls while indexing: GLIMPSE_ENCODE_STREAMS, else one per core on CPU."""
    configured = os.environ.get("GLIMPSE_ENCODE_STREAMS")
    if configured:
        return max(1, int(configured))
    if (device and device not in ("cpu", "auto")) or runtime_setting() == "torch":
        return 1
    return min(4, cpu_threads())


# Raw JPEG batches in flight (workers x prefetch 2) hold whole files in memory: at most this much.
RAW_INFLIGHT_BYTES = int(os.environ.get("GLIMPSE_RAW_INFLIGHT_MB") or 0) << 20


def raw_batch_workers(workers: int, batch_size: int, sizes: Sequence[int]) -> int:
    """Fewer raw-mode workers when files are big: 15 workers x 2 prefetched batches of 256
    12 MP photos would be 30 GB of JPEG bytes waiting. Budget: GLIMPSE_RAW_INFLIGHT_MB, else a
    quarter of RAM, at most 8 GiB."""
    budget = RAW_INFLIGHT_BYTES
    if not budget:
        try:
            ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (OSError, ValueError):
            ram = 16 << 30
        budget = min(8 << 30, ram // 4)
    mean = sum(sizes) / len(sizes) if sizes else 0
    per_worker = 2 * batch_size * max(mean, 1)
    return max(1, min(workers, int(budget // per_worker)))


def decode_mode(option: str | None) -> str:
    """--decode, else GLIMPSE_DECODE, else auto; anything else is refused."""
    decode = (option or os.environ.get("GLIMPSE_DECODE") or "auto").lower()
    if decode not in ("auto", "gpu", "cpu"):
        raise ValueError(f"unknown decode mode {decode!r}: use auto, gpu or cpu")
    return decode


def gpu_decode_steps(enc: "Encoder", decode: str | None) -> list | None:
    """The preprocessing steps to replay on the GPU after nvJPEG, or None to decode in workers.

    ``decode``: "auto" (default; GLIMPSE_DECODE) decodes on the GPU when the encoder runs on
    one and torchvision has nvJPEG; "gpu" insists; "cpu" keeps PIL in the workers.
    """
    decode = decode_mode(decode)
    if decode == "cpu" or (decode == "auto" and not enc.device.startswith("cuda")):
        return None
    from indexer.gpu_decode import gpu_jpeg_available, replayable  # torch
    from search.pil_steps import UnsupportedStep, describe

    why = None
    if not gpu_jpeg_available(enc.device):
        why = f"no nvJPEG decoder for device {enc.device}"
    else:
        try:
            steps = describe(enc.pil_transform)
            if replayable(steps):
                return steps
            why = "the model's preprocessing has a step the GPU path cannot replay"
        except UnsupportedStep as exc:
            why = str(exc)
    if decode == "gpu":
        raise ValueError(f"--decode gpu: {why}")
    log.info("decoding on CPU: %s", why)
    return None


def batch_pixels(batch, enc: "Encoder", gpu_steps: list | None):
    """The images of a batch that decoded, and their uint8 NHWC pixels (on the encoder's device
    when it is a GPU). JPEGs left raw by the workers are decoded here with nvJPEG; one nvJPEG
    refuses is decoded with PIL instead, or marked failed with PIL's error."""
    raw = [b for b in batch if b.jpeg is not None]
    if not raw and not enc.device.startswith("cuda"):  # the CPU path: no torch needed
        ok = [b for b in batch if b.pixels is not None]
        return ok, (np.stack([np.asarray(b.pixels) for b in ok]) if ok else None)
    import torch

    from indexer.gpu_decode import decode_batch
    from search.encoder import pil_to_uint8
    from search.images import ImageDecodeError, load_rgb

    on_device: dict[int, "torch.Tensor"] = {}
    if raw:
        blob = batch.blob
        datas = [blob[b.jpeg[0]:b.jpeg[1]] for b in raw]
        results = decode_batch(datas, [b.meta.get("orientation") for b in raw], gpu_steps, enc.device)
        for b, data, got in zip(raw, datas, results):
            if isinstance(got, Exception):
                try:
                    b.pixels = pil_to_uint8(enc.pil_transform(load_rgb(data.numpy().tobytes(), enc.image_size)))
                except ImageDecodeError as exc:
                    b.error = str(exc)
            else:
                on_device[b.index] = got
            b.jpeg = None
    ok = [b for b in batch if b.pixels is not None or b.index in on_device]
    if not ok:
        return ok, None
    host = [torch.as_tensor(b.pixels) for b in ok if b.index not in on_device]
    if host:
        stacked = torch.stack(host)
        if enc.device.startswith("cuda"):  # pinned: the copy to the GPU overlaps instead of blocking
            stacked = stacked.pin_memory().to(enc.device, non_blocking=True)
        if not on_device:
            return ok, stacked
    moved = iter(stacked if host else ())
    return ok, torch.stack([on_device[b.index] if b.index in on_device else next(moved) for b in ok])


def run_job(paths: Paths, roots: Sequence[str] | None, opts: Options, encoder: "Encoder | None" = None) -> tuple[Counts, str | None]:
    """Take the lock, record the job, run it. Raises LockHeld if another job runs.

    SIGTERM (``systemctl stop``, a timer's timeout) ends the job like Ctrl-C:
    committed batches stay, the job row says "interrupted", the next run resumes.
    A full disk anywhere raises :class:`DiskFull` (one line for the user).
    """
    live_before = IndexDir(paths.index).current_version()
    try:
        paths.ensure()
        with JobLock(paths.lock), _sigterm_as_interrupt():
            return _run_locked(paths, roots, opts, encoder)
    except Exception as exc:
        full = _as_disk_full(exc, paths, live_unchanged=IndexDir(paths.index).current_version() == live_before)
        if full is None or full is exc:
            raise
        raise full from exc


def _as_disk_full(exc: BaseException, paths: Paths, live_unchanged: bool = True) -> DiskFull | None:
    """``exc`` as the user-facing DiskFull when it says the disk is full, else None.

    The publish step raises DiskFull itself; anything else is SQLite (the database) or a file
    the run writes (an OSError, naming it when it can).
    """
    if isinstance(exc, DiskFull):
        return exc
    cause = disk_full_cause(exc)
    if cause is None:
        return None
    if isinstance(cause, sqlite3.Error):
        return DiskFull(paths.db, "writing the database", live_unchanged=live_unchanged)
    filename = getattr(cause, "filename", None)
    return DiskFull(filename or paths.home, f"writing {filename}" if filename else "indexing",
                    live_unchanged=live_unchanged)


def _run_locked(paths: Paths, roots: Sequence[str] | None, opts: Options, encoder: "Encoder | None") -> tuple[Counts, str | None]:
    indexer = Indexer(paths, opts, encoder)
    store = indexer.store
    try:
        store.mark_interrupted_jobs()
        if roots is None:
            roots = [r.path for r in store.roots()]
            if not roots:
                raise ValueError("no folders are known yet: run `glimpse index PATH` first")
        indexer.check_options()  # a usage mistake is not a failed job
        # A job that did not end "ok" may have committed batches without publishing them.
        last = store.recent_jobs(1)
        force_publish = bool(last) and last[0].outcome != "ok"
        if force_publish:
            log.info("previous job #%d ended %s: resuming it, and publishing even if nothing else changed",
                     last[0].id, last[0].outcome)
        job_id = indexer.job_id = store.start_job(opts.kind)
        try:
            counts = indexer.run(roots, force_publish=force_publish)
        except BaseException as exc:
            outcome = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            error = _as_disk_full(exc, paths) or exc
            if indexer.warnings.summary():
                log.warning("%s", indexer.warnings.summary())
            try:  # best effort: the database may be what failed (a full disk)
                store.finish_job(job_id, outcome, message=shown(f"{error.__class__.__name__}: {error}")[:2000],
                                 warnings=indexer.warnings.as_text(), **indexer.counts.as_job_fields())
            except Exception as record_exc:  # noqa: BLE001 - the original error is the one to report
                log.warning("could not record job #%d as %s: %s", job_id, outcome, str(record_exc).splitlines()[0])
            if error is not exc:
                raise error from exc
            raise
        version = IndexDir(paths.index).current_version()
        msg = ("unavailable roots: " + ", ".join(map(shown, counts.unavailable_roots))) if counts.unavailable_roots else None
        store.finish_job(job_id, "ok", index_version=version, message=msg, warnings=indexer.warnings.as_text(),
                         **counts.as_job_fields())
        if indexer.warnings.summary():
            log.warning("%s", indexer.warnings.summary())
        log.info("job #%d ok: %d new, %d changed, %d moved, %d deleted, %d failed, %d embedded; index version %s",
                 job_id, counts.new, counts.changed, counts.moved, counts.deleted, counts.failed, counts.embedded,
                 version)
        return counts, version
    finally:
        store.close()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
