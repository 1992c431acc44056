"""The embed stage on a Ray cluster (``--engine ray``): an :class:`~indexer.runner.EmbedRunner`.

Ray Data ``map_batches`` over a fixed pool of actors; each actor opens the encoder once from
model files the driver put in the object store (no hub, no shared model folder), then reads,
checks, hashes and decodes its batch with the same code as local indexing
(:func:`indexer.decode.load_file`, :func:`indexer.pixels.batch_pixels`) and encodes it.
Batches stream back in request order; the driver keeps everything else (plan, writes, publish).

Faults: Ray restarts a dead actor and retries its batch (``RETRIES`` times). A batch that
still kills its worker stops the Ray Data pass; the files not yet returned are then embedded
by plain actors that split a dying batch in halves until the file that kills its worker is
alone, and record that file as failed after ``RETRIES`` more deaths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from indexer.admit import admit
from indexer.decode import Loaded, load_file
from indexer.options import Options
from indexer.ray_cluster import cluster_address, ray_session
from indexer.runner import CPU_BATCH, EmbeddedBatch, EmbedRequest, LocalRunner
from search.encoders.model_spec import LOCAL_DIR, ModelLoadError, ModelSpec
from search.errors import GlimpseError
from search.media.decode import ImageDecodeError
from search.settings import settings

if TYPE_CHECKING:
    from search.encoders.protocol import ImageTextEncoder as Encoder

log = logging.getLogger("glimpse.indexer")

# Deaths of a worker on one batch (Ray's actor restarts and task retries), and on one file once
# it is alone, before giving up on it. Ray Data's default retries a crashing batch forever.
RETRIES = 2
# Test-only: "exit:NAME" makes a worker os._exit on a file named NAME, "sleep:S" sleeps S seconds
# per batch. Read by the driver and passed to the workers; unset (always, outside tests) it is inert.
TEST_HOOK_ENV = "GLIMPSETEST_RAY_WORKER_HOOK"  # not a GLIMPSE_* setting: tests only


class RayWorkersFailed(GlimpseError):
    """The Ray workers could not start or failed for every batch (not a bad file)."""


def model_payload(enc: Encoder, cpu_workers: bool) -> dict:
    """What a worker needs to open the driver's model without a hub or a shared folder.

    CPU workers, when the driver runs the model's ONNX bundle: the image tower, its preprocessing
    and tokenizer files (no torch on the workers). Otherwise the weights: the ``local-dir:``
    folder's files, or the checkpoint file; a zoo name ships nothing (its weights must be in each
    node's cache)."""
    spec = enc.spec
    folder = getattr(enc, "folder", None)
    if cpu_workers and folder and enc.backend.startswith("onnx"):
        names = [n for n in sorted(os.listdir(folder)) if n != "text.onnx" and os.path.isfile(os.path.join(folder, n))]
        return {"onnx": {n: Path(folder, n).read_bytes() for n in names if not n.endswith(".tmp")}}
    if spec.name.startswith(LOCAL_DIR):
        src = Path(spec.name[len(LOCAL_DIR) :])
        return {"dir": {p.name: p.read_bytes() for p in sorted(src.iterdir()) if p.is_file()}}
    if spec.pretrained and os.path.isfile(spec.pretrained):
        return {"name": spec.name, "checkpoint": (Path(spec.pretrained).name, Path(spec.pretrained).read_bytes())}
    return {"name": spec.name, "pretrained": spec.pretrained}


def _model_folder(payload: dict, fingerprint: str) -> str:
    """The shipped files, written once per node and model under this user's cache (never a shared
    /tmp folder: the weights may be pickles), reused by every worker and later runs."""
    from search.paths import cache_dir

    kind = "onnx" if "onnx" in payload else "weights"
    key = hashlib.sha256(f"{kind}|{fingerprint}".encode()).hexdigest()[:24]
    folder = os.path.join(cache_dir(), "ray-models", key)
    if not os.path.isdir(folder):
        files = (
            payload.get("onnx")
            or payload.get("dir")
            or dict([payload["checkpoint"]] if "checkpoint" in payload else [])
        )
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        tmp = tempfile.mkdtemp(dir=os.path.dirname(folder), prefix=f"{key}.tmp")
        for name, data in files.items():
            Path(tmp, os.path.basename(name)).write_bytes(data)
        try:
            os.rename(tmp, folder)  # atomic: a worker never sees half a model
        except OSError:  # another worker on this node was first
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def open_shipped(payload: dict, fingerprint: str, device: str, quantize: str | None, threads: int) -> Encoder:
    """A worker's encoder from the driver's payload (``model_payload``)."""
    if "onnx" in payload:
        from search.encoders.onnx_bundle import OnnxQueryEncoder

        return OnnxQueryEncoder(_model_folder(payload, fingerprint), threads=threads, quantize=quantize, eager=False)
    from search.encoders.protocol import open_encoder

    if "dir" in payload:
        spec = ModelSpec(f"{LOCAL_DIR}{_model_folder(payload, fingerprint)}", None)
    elif "checkpoint" in payload:
        spec = ModelSpec(payload["name"], os.path.join(_model_folder(payload, fingerprint), payload["checkpoint"][0]))
    else:
        spec = ModelSpec(payload["name"], payload["pretrained"])
    if spec.fingerprint() != fingerprint:
        raise ModelLoadError(f"this worker's model {spec.describe()} is not the driver's ({fingerprint})")
    return open_encoder(spec, "index", device=device, quantize=quantize, ort_threads=threads)


def read_for_shipping(path: str) -> tuple[bytes, str]:
    """``--ship-bytes``: a file's bytes read here, after the same size and header checks as a
    worker makes (a huge or non-image file is never read whole); or its error."""
    try:
        admit(path)
        with open(path, "rb") as f:
            return f.read(), ""
    except ImageDecodeError as exc:
        return b"", str(exc)
    except FileNotFoundError:
        return b"", "file vanished during indexing"
    except OSError as exc:
        return b"", f"cannot read file: {exc.strerror or exc}"


def _read_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A Ray Data task pinned to the driver's node: add each file's bytes (or why not)."""
    read = [read_for_shipping(str(p)) for p in batch["path"]]
    batch["data"] = np.array([d for d, _ in read], dtype=object)
    batch["refused"] = np.array([e for _, e in read], dtype=object)
    return batch


def _test_hook(hook: str | None, path: str) -> None:
    if hook and hook.startswith("exit:") and os.path.basename(path) == hook[5:]:
        os._exit(17)


class Embedder:
    """One Ray actor: the encoder, opened once; ``__call__`` embeds one batch of rows."""

    def __init__(self, payload: dict, fingerprint: str, device: str, quantize: str | None, threads: int, hook=None):
        if not isinstance(payload, dict):  # Ray Data passes the object store's reference as is
            import ray

            payload = ray.get(payload)
        self.enc: Encoder = open_shipped(payload, fingerprint, device, quantize, threads)
        self.hook = hook
        self.start_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"  # a restarted actor gets a new one

    def ready(self) -> bool:
        return True

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from indexer.pixels import batch_pixels

        enc, hook = self.enc, self.hook
        if hook and hook.startswith("sleep:"):
            time.sleep(float(hook[6:]))
        items = []
        data = batch.get("data")
        for j, (i, path, want) in enumerate(zip(batch["index"], batch["path"], batch["want_hash"])):
            path = str(path)
            _test_hook(hook, path)
            if data is not None:  # --ship-bytes: the driver's bytes, checked again here like a file
                if batch["refused"][j]:
                    items.append(Loaded(int(i), None, {}, str(batch["refused"][j])))
                    continue
                with tempfile.NamedTemporaryFile(prefix="glimpse-shipped-") as f:
                    f.write(data[j])
                    f.flush()
                    items.append(load_file(int(i), f.name, enc.pil_transform, enc.image_size, bool(want)))
                continue
            items.append(load_file(int(i), path, enc.pil_transform, enc.image_size, bool(want)))
        ok, pixels = batch_pixels(items, enc, None)
        vectors = np.zeros((len(items), enc.dim), dtype=np.float32)
        if ok:
            pos = {b.index: k for k, b in enumerate(items)}
            vectors[[pos[b.index] for b in ok]] = enc.encode_pixels(pixels)
        done = {b.index for b in ok}
        return {
            "index": np.asarray([b.index for b in items], dtype=np.int64),
            "vector": vectors,
            "ok": np.asarray([b.index in done for b in items]),
            "error": np.array([b.error or "" for b in items], dtype=object),
            "content_hash": np.array([b.content_hash or "" for b in items], dtype=object),
            "meta": np.array([json.dumps(b.meta) for b in items], dtype=object),
            "worker": np.array([self.start_id] * len(items), dtype=object),
        }


def to_batch(out: dict[str, np.ndarray]) -> EmbeddedBatch:
    """A worker's columns as the writer's :class:`EmbeddedBatch` (``index``: request position)."""
    items = [
        Loaded(int(i), None, json.loads(m), str(e) or None, str(h) or None)
        for i, m, e, h in zip(out["index"], out["meta"], out["error"], out["content_hash"])
    ]
    ok_mask = np.asarray(out["ok"], dtype=bool)
    ok = [it for it, good in zip(items, ok_mask) if good]
    return EmbeddedBatch(items, ok, np.asarray(out["vector"], dtype=np.float32)[ok_mask])


class RayRunner:
    """Embeds on Ray. ``prepare(encoder)`` (called by the indexer with the driver's encoder)
    says which model to ship; ``warnings()`` says what the job record should keep."""

    def __init__(
        self, opts: Options, address: str | None = None, gpus_per_worker: float = 0.0, ship_bytes: bool = False
    ):
        self.opts = opts
        self.address = address
        self.gpus = gpus_per_worker
        self.ship_bytes = ship_bytes
        self.batch_size = opts.batch_size or (256 if gpus_per_worker else CPU_BATCH)
        self.spec: ModelSpec | None = None
        self._enc: Encoder | None = None
        self.restarts = 0  # worker deaths seen (a restart each, and its batch retried)
        self.crashed_files = 0
        self._wait = 0.0
        self._local: LocalRunner | None = None  # a small run without a cluster address embeds here

    def prepare(self, enc: Encoder) -> None:
        self.spec = enc.spec
        self._enc = enc

    def busy(self) -> dict[str, float]:
        if self._local is not None:
            return self._local.busy()
        return {"waiting for Ray workers": self._wait}

    def warnings(self) -> list[str]:
        lines = []
        if self.restarts:
            lines.append(f"Ray: {self.restarts} worker restart(s); their batches were retried")
        if self.crashed_files:
            lines.append(f"Ray: {self.crashed_files} file(s) killed their worker on every retry: recorded as failed")
        return lines

    def run(self, requests: Sequence[EmbedRequest]) -> Generator[EmbeddedBatch, None, None]:
        if not requests:
            return
        if self.spec is None:
            raise RuntimeError("RayRunner.prepare(encoder) must be called before run()")
        self._local = self.local_instead(len(requests))
        if self._local is not None:
            yield from self._local.run(requests)
            return
        with ray_session(self.address):
            yield from self._run(requests)

    def local_instead(self, files: int) -> LocalRunner | None:
        """The local runner for a run too small to pay for starting a private Ray cluster (fewer than
        GLIMPSE_RAY_MIN_FILES files to embed and no cluster address), after one log line saying so;
        None: embed on Ray. A cluster given by address is used whatever the size: joining costs a
        connection, not a cluster's start."""
        least = settings()["GLIMPSE_RAY_MIN_FILES"]
        if cluster_address(self.address) is not None or files >= least:
            return None
        assert self._enc is not None
        log.info(
            "embedding %d file(s) on this machine without Ray: fewer than GLIMPSE_RAY_MIN_FILES=%d, below which "
            "starting a private Ray cluster costs more than it saves (give --ray-address to use a cluster)",
            files,
            least,
        )
        # --workers counts Ray workers; here the local runner sizes its decode workers itself.
        return LocalRunner(self._enc, dataclasses.replace(self.opts, workers=None))

    def _worker_setup(self, ray) -> tuple[int, tuple, dict]:
        """Pool size, actor constructor arguments and resources per actor."""
        assert self.spec is not None and self._enc is not None
        total = ray.cluster_resources()
        if self.gpus:
            workers = self.opts.workers or max(1, int(total.get("GPU", 0) / self.gpus))
            device = "cuda"
        else:
            workers = self.opts.workers or max(1, int(total.get("CPU", 1)))
            device = "cpu"
        payload = ray.put(model_payload(self._enc, cpu_workers=not self.gpus))
        args = (payload, self.spec.fingerprint(), device, self.opts.quantize, 1, os.environ.get(TEST_HOOK_ENV))
        self._payload = payload  # restarted actors read it again: keep it alive for the run
        return workers, args, {"num_cpus": 1, "num_gpus": self.gpus or None}

    def _rows(self, indices: Sequence[int], requests: Sequence[EmbedRequest]) -> list[dict[str, Any]]:
        return [{"index": i, "path": requests[i].path, "want_hash": requests[i].want_hash} for i in indices]

    def _run(self, requests: Sequence[EmbedRequest]) -> Iterator[EmbeddedBatch]:
        import ray
        import ray.data

        workers, args, resources = self._worker_setup(ray)
        log.info(
            "ray: %d file(s) to embed on %d worker(s), batches of %d%s",
            len(requests),
            workers,
            self.batch_size,
            ", bytes shipped from this machine" if self.ship_bytes else "",
        )
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # the writer commits in request order
        ctx.enable_progress_bars = False  # Glimpse's bar counts committed rows
        ds: ray.data.Dataset = ray.data.from_items(self._rows(range(len(requests)), requests))
        if self.ship_bytes:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            here = ray.get_runtime_context().get_node_id()
            ds = ds.map_batches(
                _read_batch,
                batch_size=self.batch_size,
                num_cpus=0,  # I/O on the driver's node, beside the actors that hold its CPUs
                concurrency=2,
                scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Ray's deprecation notices about its own arguments
            ds = ds.map_batches(
                Embedder,
                batch_size=self.batch_size,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=workers),
                fn_constructor_args=args,
                max_restarts=RETRIES,
                max_task_retries=RETRIES,
                **{k: v for k, v in resources.items() if v},
            )
        done: set[int] = set()
        starts: set[str] = set()
        try:
            batches = iter(ds.iter_batches(batch_size=None, batch_format="numpy"))
            while True:
                t0 = time.perf_counter()
                out = next(batches, None)
                self._wait += time.perf_counter() - t0
                if out is None:
                    break
                starts.update(str(w) for w in out["worker"])
                batch = to_batch(out)
                done.update(b.index for b in batch.items)
                yield batch
        except ray.exceptions.RayError as exc:  # a worker died more often than Ray retries: bisect below
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else exc.__class__.__name__
            log.warning(
                "ray: a batch failed after %d retries (%s); finding the file(s) that crash workers", RETRIES, first
            )
            self.restarts += RETRIES + 1
            remaining = [i for i in range(len(requests)) if i not in done]
            yield from self._bisect(ray, remaining, requests, workers, args, resources)
        finally:
            self.restarts += max(0, len(starts) - workers)

    def _bisect(self, ray, remaining: list[int], requests, workers: int, args: tuple, resources: dict):
        """Embed ``remaining`` with plain actors; a batch whose worker dies is split in halves, and a
        file alone that kills its worker ``RETRIES + 1`` times is recorded as failed."""
        actor_cls = ray.remote(Embedder).options(
            max_restarts=0,  # a dead actor is replaced below: a call sent to one restarting would fail too
            max_task_retries=0,
            **{k: v for k, v in resources.items() if v},
        )
        actors = [actor_cls.remote(*args) for _ in range(min(workers, max(1, len(remaining))))]
        try:
            ray.get([a.ready.remote() for a in actors])
        except ray.exceptions.RayError as exc:
            raise RayWorkersFailed(f"Ray workers could not start: {exc}") from exc
        todo = deque((remaining[s : s + self.batch_size], 0) for s in range(0, len(remaining), self.batch_size))
        free = list(actors)
        inflight: dict = {}
        try:
            while todo or inflight:
                while todo and free:
                    chunk, tries = todo.popleft()
                    actor = free.pop()
                    inflight[actor.__call__.remote(self._columns(chunk, requests))] = (actor, chunk, tries)
                t0 = time.perf_counter()
                ready, _ = ray.wait(list(inflight), num_returns=1)
                self._wait += time.perf_counter() - t0
                actor, chunk, tries = inflight.pop(ready[0])
                try:
                    out = ray.get(ready[0])
                except ray.exceptions.RayActorError:  # the worker process died on this batch
                    self.restarts += 1
                    actors.remove(actor)
                    actor = actor_cls.remote(*args)
                    actors.append(actor)
                    free.append(actor)
                    if len(chunk) > 1:
                        half = len(chunk) // 2
                        todo.appendleft((chunk[half:], 0))
                        todo.appendleft((chunk[:half], 0))
                    elif tries >= RETRIES:
                        self.crashed_files += 1
                        yield _crashed(chunk[0], tries + 1)
                    else:
                        todo.appendleft((chunk, tries + 1))
                    continue
                free.append(actor)
                yield to_batch(out)
        finally:
            for a in actors:
                with contextlib.suppress(Exception):
                    ray.kill(a)

    def _columns(self, chunk: list[int], requests: Sequence[EmbedRequest]) -> dict[str, np.ndarray]:
        cols = {
            "index": np.asarray(chunk, dtype=np.int64),
            "path": np.array([requests[i].path for i in chunk], dtype=object),
            "want_hash": np.asarray([requests[i].want_hash for i in chunk], dtype=bool),
        }
        if self.ship_bytes:
            read = [read_for_shipping(requests[i].path) for i in chunk]
            cols["data"] = np.array([d for d, _ in read], dtype=object)
            cols["refused"] = np.array([e for _, e in read], dtype=object)
        return cols


def _crashed(index: int, deaths: int) -> EmbeddedBatch:
    error = f"the worker process died {deaths} times while reading or decoding this file; not indexed"
    return EmbeddedBatch([Loaded(index, None, {}, error)], [], np.zeros((0, 0), dtype=np.float32))
