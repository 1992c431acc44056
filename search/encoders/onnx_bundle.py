"""The query-time model: both towers in ONNX Runtime, loaded without torch.

A server answers one query at a time; importing torch and open_clip costs it
~4 s of start-up and ~700 MB resident before the model is even built
(measured, BENCHMARKS.md). So the first time a model is loaded in torch (by
``glimpse index``, or by a server that finds no bundle), Glimpse writes a
*query bundle* next to the cached image-tower export:

    $GLIMPSE_CACHE_DIR/onnx/query-<key>/
        image.onnx  text.onnx  tokenizer.json  meta.json

and checks it against torch (text and image vectors within ``ATOL``, identical
token ids, identical preprocessed pixels). ``meta.json`` is written last, so a
bundle without it is unfinished and ignored. Later processes load the bundle
with onnxruntime, ``tokenizers`` and Pillow only. ``GLIMPSE_RUNTIME=torch``
keeps the torch path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from search.encoders import pil_steps
from search.encoders import tokenizer as clip_tokenizer
from search.encoders.model_spec import ModelSpec
from search.encoders.ort_session import cpu_session, ensure_int8, probe_pixels, run_session, unit_rows
from search.media.decode import to_uint8_array
from search.paths import cache_dir

if TYPE_CHECKING:  # the torch encoder: only the bundle's builder needs it
    from search.encoders.torch_clip import Encoder

log = logging.getLogger(__name__)

FORMAT = 3  # bump to invalidate bundles (2: meta.json records image_gflops; 3: text_tokens)
ATOL = 1e-4  # max abs difference to torch, per vector component (vectors are unit length)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


def bundle_dir(spec: ModelSpec) -> str:
    key = hashlib.sha256(
        "|".join([spec.fingerprint(), spec.name, _version("open_clip_torch"), _version("torch"), str(FORMAT)]).encode()
    ).hexdigest()[:24]
    return os.path.join(cache_dir(), "onnx", f"query-{key}")


class OnnxQueryEncoder:
    """Text and image towers in ONNX Runtime: ``search.encoders.torch_clip.Encoder`` without torch.

    A server queries through it; ``glimpse index`` on CPU embeds through it too
    (``search.encoders.protocol.open_encoder``), so a reindex never imports torch. Sessions open
    on first use unless ``eager`` (a server wants them ready before its first query).
    """

    device = "cpu"
    precision = "fp32"

    def __init__(self, folder: str, threads: int | None = None, quantize: str | None = None, eager: bool = True):
        with open(os.path.join(folder, "meta.json")) as f:
            meta = json.load(f)
        self.folder = folder
        self.spec = ModelSpec(meta["model"], meta["pretrained"])
        self.dim = int(meta["dim"])
        self.image_size = int(meta["image_size"])
        self._gflops = meta.get("image_gflops")
        self.mean = np.asarray(meta["mean"], np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(meta["std"], np.float32).reshape(1, 3, 1, 1)
        self.steps = meta["pil_steps"]
        self.pil_transform = pil_steps.compose(self.steps)
        self.tokenizer = clip_tokenizer.load(meta["tokenizer"], folder)
        self._tokens_to_end = meta.get("text_tokens") == "to_end"
        self._threads = threads
        self._quantize = quantize
        self.backend = f"onnx-{quantize}" if quantize else "onnx"
        self._sessions: dict = {}
        self._session_locks = {"text": threading.Lock(), "image": threading.Lock()}
        if eager:  # both sessions now, side by side: 1.5-1.7 s instead of 2.0-2.5 on 2 cores (a server's start)
            with ThreadPoolExecutor(2, thread_name_prefix="onnx-load") as pool:
                list(pool.map(self._session, ("text", "image")))

    def _session(self, tower: str):
        session = self._sessions.get(tower)
        if session is None:
            with self._session_locks[tower]:
                session = self._sessions.get(tower)
                if session is None:
                    path = os.path.join(self.folder, f"{tower}.onnx")
                    if tower == "image" and self._quantize == "int8":
                        path = ensure_int8(path, self.normalise(probe_pixels(self.image_size)))
                    session = self._sessions[tower] = cpu_session(path, self._threads)
        return session

    @property
    def text(self):
        return self._session("text")

    @property
    def image(self):
        return self._session("image")

    def image_gflops(self) -> float | None:
        """The image tower's counted GFLOPs per image (recorded at export), for sizing decode workers."""
        return self._gflops

    def start_batch_runtime(self) -> None:
        """Open the image session now (the indexer overlaps this with its decode workers' start)."""
        self.image  # noqa: B018

    def normalise(self, batch: np.ndarray) -> np.ndarray:
        """uint8 NHWC pixels -> the float NCHW input open_clip's Normalize would give."""
        x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
        x *= 1.0 / (255.0 * self.std)
        x -= self.mean / self.std
        return x

    def encode_pixels(self, batch: np.ndarray) -> np.ndarray:
        """Encode a uint8 NHWC batch (the output of ``pil_transform``, stacked). Thread-safe:
        concurrent calls run side by side in one session."""
        return unit_rows(run_session(self.image, self.normalise(np.asarray(batch))))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        session = self.text
        tokens = self.tokenizer(list(texts))
        if self._tokens_to_end:  # the tower gives the same vectors without the padding after the last end
            tokens = cut_to_end(tokens)
        (out,) = session.run(None, {session.get_inputs()[0].name: tokens})
        return unit_rows(out)

    def encode_pil(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.encode_pixels(np.stack([to_uint8_array(self.pil_transform(im)) for im in images]))


def cut_to_end(tokens: np.ndarray) -> np.ndarray:
    """Token rows without the columns after the batch's last end-of-text token (padding is 0 there)."""
    return tokens[:, : int(np.nonzero(tokens.any(axis=0))[0][-1]) + 1]


_build_lock = threading.Lock()


class UnsupportedModel(RuntimeError):
    """This model's query path cannot be reproduced outside torch; it keeps the torch encoder."""


def open_bundle(spec: ModelSpec, **kwargs) -> OnnxQueryEncoder | None:
    """The verified bundle for ``spec``, or None when there is none (or onnxruntime is missing).
    ``kwargs`` go to ``OnnxQueryEncoder``."""
    folder = bundle_dir(spec)
    if not os.path.isfile(os.path.join(folder, "meta.json")):
        return None
    try:
        return OnnxQueryEncoder(folder, **kwargs)
    except ImportError as exc:
        log.info("query bundle not usable (%s); using torch", exc)
        return None


def ensure_bundle(enc: Encoder) -> str:
    """Build and verify the bundle for a loaded torch ``Encoder`` unless it exists; return its folder."""
    folder = bundle_dir(enc.spec)
    if os.path.isfile(os.path.join(folder, "meta.json")):
        return folder
    refused = f"{folder}.unsupported"  # a model that cannot have a bundle is not re-exported at every start
    if os.path.isfile(refused):
        with open(refused) as f:
            raise UnsupportedModel(f.read().strip())
    with _build_lock:
        if os.path.isfile(os.path.join(folder, "meta.json")):
            return folder
        tmp = f"{folder}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        try:
            try:
                _build(enc, tmp)
            except (clip_tokenizer.UnsupportedTokenizer, pil_steps.UnsupportedStep, UnsupportedModel) as exc:
                with open(refused, "w") as f:
                    f.write(f"{exc.__class__.__name__}: {exc}\n")
                raise
            try:
                os.replace(tmp, folder)
            except OSError:  # another process finished first (the folder exists and is not empty)
                if not os.path.isfile(os.path.join(folder, "meta.json")):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("query bundle ready: %s", folder)
    return folder


def _build(enc: Encoder, tmp: str) -> None:
    import torch

    from search.encoders.torch_clip import OnnxImageTower

    steps = pil_steps.describe(enc.pil_transform)
    tok_meta = clip_tokenizer.convert(enc.tokenizer, os.path.join(tmp, "tokenizer.json"))
    diff = clip_tokenizer.same_as(enc.tokenizer, clip_tokenizer.load(tok_meta, tmp))
    if diff is not None:
        raise clip_tokenizer.UnsupportedTokenizer(f"rebuilt tokenizer differs from open_clip's on {diff!r}")
    image = OnnxImageTower.for_encoder(enc)  # exported once, cached and verified against torch
    try:
        os.link(image.path, os.path.join(tmp, "image.onnx"))
    except OSError:
        shutil.copyfile(image.path, os.path.join(tmp, "image.onnx"))
    del image
    text_path = os.path.join(tmp, "text.onnx")
    text_tokens = _export_text_tower(enc, text_path)
    meta = {
        "format": FORMAT,
        "model": enc.spec.name,
        "pretrained": enc.spec.pretrained,
        "fingerprint": enc.spec.fingerprint(),
        "dim": int(enc.dim),
        "image_size": int(enc.image_size),
        "mean": list(enc.mean),
        "std": list(enc.std),
        "pil_steps": steps,
        "tokenizer": tok_meta,
        "image_gflops": enc.image_gflops(),
        "text_tokens": text_tokens,
    }
    _write_meta(tmp, meta)

    # Verify the whole query path against torch before anyone relies on it.
    q = OnnxQueryEncoder(tmp, threads=torch.get_num_threads())
    texts = clip_tokenizer.PROBE_TEXTS
    want = enc.encode_texts(texts)
    err = float(np.abs(q.encode_texts(texts) - want).max())
    if err > ATOL and text_tokens == "to_end":  # the cut tower is an optimisation: the whole one then
        log.warning("the text tower cut at the end token differs from torch by %.1e: exported whole", err)
        meta["text_tokens"] = _export_text_tower(enc, text_path, cut=False)
        _write_meta(tmp, meta)
        q = OnnxQueryEncoder(tmp, threads=torch.get_num_threads())
        err = float(np.abs(q.encode_texts(texts) - want).max())
    rng = np.random.default_rng(0)
    probes = [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in ((300, 200), (150, 320), (64, 64))
    ]
    for im in probes:
        if not np.array_equal(np.asarray(q.pil_transform(im)), np.asarray(enc.pil_transform(im))):
            raise pil_steps.UnsupportedStep("replayed preprocessing differs from open_clip's")
    err = max(err, float(np.abs(q.encode_pil(probes) - _torch_encode_pil(enc, probes)).max()))
    if not err <= ATOL:
        raise UnsupportedModel(f"ONNX query towers differ from torch by {err:.2e} (> {ATOL})")
    log.debug("query bundle matches torch (max abs diff %.1e)", err)


def _write_meta(folder: str, meta: dict) -> None:
    with open(os.path.join(folder, "meta.json.tmp"), "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(os.path.join(folder, "meta.json.tmp"), os.path.join(folder, "meta.json"))


def _torch_encode_pil(enc, images) -> np.ndarray:
    import torch

    from search.encoders.torch_clip import pil_to_uint8

    batch = torch.stack([pil_to_uint8(enc.pil_transform(im)) for im in images])
    with torch.inference_mode():
        return enc._normalise(enc.model.encode_image(enc._pixels_to_input(batch)))


def _export_text_tower(enc, path: str, cut: bool = True) -> str:
    """The text tower in ONNX; returns how its tokens are given: ``to_end`` (cut after the batch's last
    end-of-text token: ``torch_clip.truncatable_text``) or ``context`` (the whole context, padded)."""
    from search.encoders.torch_clip import export_onnx, truncatable_text

    log.info("exporting the text tower of %s to ONNX (once; cached)", enc.spec.describe())
    dummy = enc.tokenizer(["a photo of a cat", "a dog"])
    tower = truncatable_text(enc.model) if cut else None
    if tower is None:
        export_onnx(enc.model, "encode_text", dummy, path, "tokens")
        return "context"
    export_onnx(tower, "forward", dummy[:, :8], path, "tokens", tokens_axis=True)
    return "to_end"
