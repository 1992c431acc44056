"""The versioned index folder: publish a version (from scratch or from the live one), switch, prune.

Layout under ``<home>/index``: one folder per version (``000001``…) holding, per index
(``images``, ``captions``): ``NAME.faiss``, ``NAME.ids.npy`` (the ids it holds, sorted),
``NAME.trained.faiss`` (an IVF's trained, empty index) and, for compact codes, ``NAME.f16.npy``
(the float16 vectors its candidates are re-ranked against); plus ``manifest.json``, and a
``current`` file naming the live version. Publishing writes a complete new folder, fsyncs it,
then replaces ``current`` atomically, so a reader sees either the old or the new index, never a
half-written one. Published files are never modified: an incremental publish reads the live
version's files and writes the next version beside them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

from search.store.schema import unit_f32
from search.vectors.build import (
    Built,
    Reranker,
    build_streamed,
    can_reuse_training,
    choose_index_spec,
    is_ivf,
    log_phase,
    search,
)
from search.vectors.f16_files import (
    DEAD_SHARE,
    MAX_SEGMENTS,
    F16Rows,
    F16Writer,
    compact,
    link_or_copy,
    open_f16,
    rows_map_path,
)
from search.vectors.id_arrays import common, merged, minus
from search.vectors.loaded import LoadedIndex, load_version

log = logging.getLogger("search.vectors.live")

KEEP_VERSIONS = 2
NAMES = ("images", "captions")
SPEC_KEYS = {"images": "index_type", "captions": "caption_index_type"}


class VectorSource(Protocol):
    """Where a publish reads one index's vectors from (the store, or arrays in memory)."""

    def snapshot(self) -> tuple[np.ndarray, int | None]:
        """(sorted ids that have a vector, the write mark they are as of; None: no marks)."""
        ...

    def changed_since(self, mark: int) -> np.ndarray:
        """Ids whose vector was written after ``mark``."""
        ...

    def chunks(self, ids: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Vectors of the sorted ``ids`` that still have one: (ids, float16/32) chunks, in id order."""
        ...


def _sampler(src: VectorSource, ids: np.ndarray):
    def sample(m: int) -> np.ndarray:
        pick = np.sort(np.random.default_rng(0).choice(len(ids), size=min(m, len(ids)), replace=False))
        out: np.ndarray | None = None
        got = 0
        for _, v in src.chunks(ids[pick]):  # filled in place: one copy of the sample, not two
            if out is None:
                out = np.empty((len(pick), v.shape[1]), np.float32)
            out[got : got + len(v)] = unit_f32(v)
            got += len(v)
        return out[:got] if out is not None else np.zeros((0, 0), np.float32)

    return sample


SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def _searcher(built: Built) -> SearchFn:
    """``search(queries, k)`` over a freshly built index, as a server will answer it."""

    def run(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return search(built.index, queries, min(k, max(1, int(built.index.ntotal))), rerank=built.rerank)

    return run


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


class IndexDir:
    """The versioned index folder of one GLIMPSE_HOME."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    @property
    def current_file(self) -> Path:
        return self.root / "current"

    def current_version(self) -> str | None:
        try:
            v = self.current_file.read_text().strip()
        except FileNotFoundError:
            return None
        return v if v and (self.root / v / "manifest.json").exists() else None

    def versions(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name.isdigit())

    def _next_version(self) -> str:
        existing = [int(v) for v in self.versions()]
        return f"{(max(existing) + 1) if existing else 1:06d}"

    def publish_sources(
        self,
        images: VectorSource,
        captions: VectorSource,
        manifest: dict,
        spec: dict | None = None,
        rebuild: bool = False,
        floor: Callable[[SearchFn], float | None] | None = None,
    ) -> str:
        """Build, write beside the live version, switch atomically, prune old ones.

        ``floor(search)``, given a search of the images index just built (re-ranked where its type
        stores compact codes), returns the version's relevance floor for the manifest.

        Each index is updated from the live version's when that still fits (same model, same
        index type, quantizer trained within RETRAIN_FACTOR of the corpus; see ``_plan``) unless
        ``rebuild``; otherwise streamed from scratch. On any failure (a full disk, an interrupt)
        nothing half-written is left behind and ``current`` still names the version it named before.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        version = self._next_version()
        tmp = self.root / f".tmp-{version}-{os.getpid()}"
        final = self.root / version
        cur_tmp = self.root / f".current-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
            specs, counts, marks, how = {}, {}, {}, {}
            for name, src, given in (("images", images, spec), ("captions", captions, None)):
                built, marks[name], how[name] = self._build_one(name, src, manifest, given, rebuild, tmp, version)
                faiss.write_index(built.index, str(tmp / f"{name}.faiss"))
                np.save(tmp / f"{name}.ids.npy", built.ids)
                if built.trained is not None:
                    faiss.write_index(built.trained, str(tmp / f"{name}.trained.faiss"))
                specs[SPEC_KEYS[name]], counts[name] = built.spec, int(built.index.ntotal)
                if name == "images" and floor is not None:
                    manifest = dict(manifest, floor=floor(_searcher(built)))
                if built.rerank is not None:
                    built.rerank.vectors.close()
            manifest = dict(
                manifest,
                version=version,
                images=counts["images"],
                captions=counts["captions"],
                **specs,
                marks=marks,
                built=how,
                created_at=time.time(),
            )
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
            for f in tmp.iterdir():
                _fsync_file(f)
            _fsync_dir(tmp)
            os.rename(tmp, final)
            cur_tmp.write_text(version + "\n")
            _fsync_file(cur_tmp)
            os.replace(cur_tmp, self.current_file)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if self.current_version() != version:  # renamed in but never made live
                shutil.rmtree(final, ignore_errors=True)
            cur_tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.root)
        log.info(
            "published index version %s: %d images (%s, %s), %d captions (%s)",
            version,
            counts["images"],
            specs["index_type"]["type"],
            how["images"],
            counts["captions"],
            how["captions"],
        )
        self.prune()
        return version

    def _live_manifest(self, manifest: dict) -> tuple[Path, dict] | None:
        """The live version's folder and manifest when it was built by the same model.

        A live manifest that cannot be read means the next version is built from scratch: said in the
        log as a warning with its cause, since that build costs far more than an incremental one."""
        live = self.current_version()
        if live is None:
            return None
        try:
            old = json.loads((self.root / live / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            log.warning(
                "the live index version %s has an unreadable manifest (%s: %s): building the next version "
                "from scratch instead of from it",
                live,
                exc.__class__.__name__,
                exc,
            )
            return None
        if not isinstance(old, dict):
            log.warning("the live index version %s has a manifest that is not an object: building from scratch", live)
            return None
        if old.get("dim") != manifest.get("dim") or old.get("fingerprint") != manifest.get("fingerprint"):
            return None
        return self.root / live, old

    def _build_one(
        self, name: str, src: VectorSource, manifest: dict, given: dict | None, rebuild: bool, tmp: Path, version: str
    ) -> tuple[Built, int | None, str]:
        dim = int(manifest["dim"])
        t = time.perf_counter()
        ids, mark = src.snapshot()
        log_phase("%s: %d ids with a vector", t, name, len(ids))
        live = None if (given or rebuild) else self._live_manifest(manifest)
        if live is not None and mark is not None:
            built = self._incremental(name, src, ids, live[0], live[1], tmp, version)
            if built is not None:
                return built, mark, "incremental"
        prev_spec, trained = (given, None) if given else self._reusable_training(name, len(ids), live)
        built = build_streamed(
            src.chunks(ids), len(ids), dim, prev_spec, trained, _sampler(src, ids), tmp / f"{name}.f16.npy"
        )
        return built, mark, "reused quantizer" if trained is not None else "from scratch"

    def _incremental(
        self, name: str, src: VectorSource, ids: np.ndarray, folder: Path, old: dict, tmp: Path, version: str
    ) -> Built | None:
        """The live index minus deleted and re-written ids plus the new vectors, or None when a
        rebuild is due: another index type for this size, a quantizer trained on a corpus more
        than RETRAIN_FACTOR away, or a version without id list and write mark."""
        t = time.perf_counter()
        spec = dict(old.get(SPEC_KEYS[name]) or {})
        old_mark = (old.get("marks") or {}).get(name)
        dim = int(old["dim"])
        if old_mark is None or spec.get("type") != choose_index_spec(len(ids), dim)["type"]:
            return None
        if is_ivf(spec) and not can_reuse_training(len(ids), dim, spec):
            return None
        try:
            old_ids = np.load(folder / f"{name}.ids.npy")
            # A plain read (no mmap): the copy is ours to change, the live files stay as they are.
            index = faiss.read_index(str(folder / f"{name}.faiss"))
            old_f16 = open_f16(folder, name, spec) if spec["type"] == "ivfpq" else None
            if is_ivf(spec):
                link_or_copy(folder / f"{name}.trained.faiss", tmp / f"{name}.trained.faiss")
        except (OSError, RuntimeError, ValueError):
            return None  # pruned meanwhile, or files of an older layout: build afresh
        log_phase("%s: read the live index (%d vectors)", t, name, index.ntotal)
        changed = common(src.changed_since(int(old_mark)), old_ids)
        drop = merged(minus(old_ids, ids), changed)
        add = merged(minus(ids, old_ids), changed)
        v = old.get("version")
        if len(drop):
            index.remove_ids(faiss.IDSelectorBatch(drop))
        # Compact codes: the added vectors go to a new segment after the live version's ones.
        segment = tmp / f"{name}.f16.{version}.npy"
        writer = F16Writer(segment, len(add), dim) if old_f16 is not None and len(add) else None
        added_ids = []
        for part_ids, vecs in src.chunks(add):
            index.add_with_ids(unit_f32(vecs), np.ascontiguousarray(part_ids, dtype=np.int64))
            added_ids.append(part_ids)
            if writer is not None:
                writer.write(vecs)
        log_phase("%s: removed %d, added %d", t, name, len(drop), len(add))
        kept = ~np.isin(old_ids, drop)
        new_ids = np.concatenate([old_ids[kept], *added_ids])
        order = np.argsort(new_ids, kind="stable")
        new_ids = new_ids[order]
        if index.ntotal != len(new_ids):
            raise RuntimeError(f"incremental {name} index holds {index.ntotal} vectors, expected {len(new_ids)}")
        rerank = None
        if old_f16 is not None:
            if writer is not None:
                writer.close()
            rows = _segment_rows(old_f16, kept, order, len(new_ids) - int(kept.sum()))
            rerank = Reranker(self._f16_files(name, old_f16, segment, writer, rows, tmp), new_ids, int(spec["rerank"]))
            old_f16.close()
            spec["f16_files"] = [p.name for p in rerank.vectors.paths]
        log.info("%s: removed %d, added %d (%d re-written) to version %s", name, len(drop), len(add), len(changed), v)
        return Built(index, spec, None, new_ids, rerank)  # None: the trained file was linked above

    @staticmethod
    def _f16_files(
        name: str, old: F16Rows, segment: Path, writer: F16Writer | None, rows: np.ndarray, tmp: Path
    ) -> F16Rows:
        """The next version's re-rank vectors: the live version's segments (linked, never written)
        plus the new one, or, once dead rows or segments pile up, all live rows as one segment."""
        paths = old.paths + ([segment] if writer is not None else [])
        total = old.total + (writer.rows if writer is not None else 0)
        merged = F16Rows(paths, rows)
        if total - len(rows) <= DEAD_SHARE * len(rows) and len(paths) <= MAX_SEGMENTS:
            for p in old.paths:
                link_or_copy(p, tmp / p.name)
            merged.close()
            np.save(rows_map_path(tmp, name), rows)
            return F16Rows([tmp / p.name for p in paths], rows)
        one = tmp / f"{name}.f16.npy"
        compact(merged, one)
        merged.close()
        segment.unlink(missing_ok=True)
        log.info("%s: re-rank vectors compacted into one segment (%d dead rows dropped)", name, total - len(rows))
        return F16Rows([one])

    def _reusable_training(
        self, name: str, n: int, live: tuple[Path, dict] | None
    ) -> tuple[dict | None, faiss.Index | None]:
        """The live version's trained, empty IVF for ``name`` if it still suits ``n`` vectors."""
        if live is None:
            return None, None
        folder, old = live
        spec = old.get(SPEC_KEYS[name]) or {}
        if not can_reuse_training(n, int(old["dim"]), spec):
            return None, None
        try:
            trained = faiss.read_index(str(folder / f"{name}.trained.faiss"))
        except (OSError, RuntimeError):
            return None, None  # pruned meanwhile, or an older version without one: train afresh
        return {k: spec[k] for k in ("type", "nlist", "codec", "m", "rerank", "trained_on") if k in spec}, trained

    def prune(self, keep: int = KEEP_VERSIONS) -> None:
        live = self.current_version()
        versions = self.versions()
        for v in versions[:-keep] if keep else versions:
            if v != live:
                shutil.rmtree(self.root / v, ignore_errors=True)
        # Leftovers of a publish killed half-way (only one job runs at a time).
        for p in self.root.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)
        for p in self.root.glob(".current-*"):
            p.unlink(missing_ok=True)

    def load(
        self, version: str | None = None, use_gpu: bool | None = None, mmap: bool | None = None
    ) -> LoadedIndex | None:
        version = version or self.current_version()
        return None if version is None else load_version(self.root / version, use_gpu, mmap)


def _segment_rows(old: F16Rows, kept: np.ndarray, order: np.ndarray, added: int) -> np.ndarray:
    """Run rows of the next version's sorted ids: the kept ids' rows in the live run, then the added
    ids' rows in the new segment (after every live row), put in the order ``order`` sorts the ids."""
    live = old.rows if old.rows is not None else np.arange(len(kept), dtype=np.int64)
    return np.concatenate([live[kept], old.total + np.arange(added, dtype=np.int64)])[order]
