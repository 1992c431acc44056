"""open_clip wrapper: one loaded model, normalised float32 vectors, thread-safe.

Loading goes through open_clip's own factory, so a zoo name + pretrained tag,
a checkpoint file, or a ``local-dir:`` folder all behave as open_clip defines.
Preprocessing is split in two: the PIL part (resize, crop) runs wherever the
image is decoded (worker processes), the tensor part (scale, normalise) runs
batched on the encoder's device.

Runtime: on CPU the image tower runs in ONNX Runtime when it is installed
(measured faster than torch fp32 for ViT-B-32 on CPU, see BENCHMARKS.md). The
ONNX graph is exported once from the very same open_clip weights, cached by
model fingerprint under ``$GLIMPSE_CACHE_DIR`` (default ``~/.cache/glimpse``),
and checked against torch on a probe batch before use; any failure falls back
to torch with a warning. ``GLIMPSE_RUNTIME=torch|onnx|auto`` (or ``runtime=``)
overrides the choice. Text runs in torch here; a server queries through
``search.encoders.onnx_bundle`` instead (both towers in ONNX Runtime, no torch import).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from search.encoders.model_spec import LOCAL_DIR, RANDOM_INIT, ModelLoadError, ModelSpec
from search.encoders.ort_session import (
    cpu_session,
    ensure_int8,
    probe_pixels,
    quantize_setting,
    run_session,
    runtime_setting,
    unit_rows,
)
from search.errors import InvalidValue
from search.media.decode import to_uint8_array
from search.paths import cache_dir

log = logging.getLogger(__name__)


def pick_device(device: str | None = None) -> str:
    if device and device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


class Encoder:
    """A loaded open_clip model with its tokenizer and split preprocessing."""

    def __init__(
        self,
        spec: ModelSpec,
        device: str | None = None,
        precision: str = "auto",
        runtime: str | None = None,
        quantize: str | None = None,
        ort_threads: int | None = None,
    ):
        import open_clip

        self.spec = spec
        self.device = pick_device(device)
        # bf16/fp16 on a CPU without native support is several times slower.
        self.precision = ("fp16" if self.device.startswith("cuda") else "fp32") if precision == "auto" else precision
        self._lock = threading.Lock()
        # ONNX Runtime threads per call; the indexer runs one call per core with 1 thread each.
        self.ort_threads = ort_threads
        pretrained = None if spec.pretrained in (None, RANDOM_INIT) else spec.pretrained
        if spec.pretrained == RANDOM_INIT or (not pretrained and not spec.name.startswith(LOCAL_DIR)):
            log.warning(
                "model %s has no pretrained weights: random init (seed 0), useful for benchmarks only", spec.name
            )
            torch.manual_seed(0)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.name, pretrained=pretrained, device=self.device
            )
            self.tokenizer = open_clip.get_tokenizer(spec.name)
        except Exception as exc:  # open_clip raises RuntimeError/FileNotFoundError/ValueError
            raise ModelLoadError(_load_hint(spec, exc)) from exc
        model.eval()
        self.model = model
        self.preprocess = preprocess
        self.pil_transform, self.mean, self.std = _split_transform(preprocess)
        self._mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        with torch.inference_mode():
            self.dim = int(self.encode_texts(["a photo"]).shape[1])
        self.backend = "torch"
        self._ort = None
        runtime = runtime_setting(runtime)
        if runtime not in RUNTIMES:
            raise InvalidValue(f"unknown runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
        quantize = quantize_setting(quantize)
        if quantize not in (None, "int8"):
            raise InvalidValue(f"unknown quantization {quantize!r}: only int8 is supported")
        if quantize and runtime == "torch":
            raise InvalidValue("int8 quantization needs the ONNX Runtime image tower (runtime onnx or auto)")
        # auto on CPU: ONNX Runtime for batches (indexing), created on the first batch of
        # ORT_MIN_BATCH+ images, so a server that encodes one query image at a time never
        # pays its start-up or memory. onnx / int8: eager, and failures are errors.
        self._ort_auto = runtime == "auto" and not quantize and self.device == "cpu" and self.precision == "fp32"
        if runtime == "onnx" or quantize:
            self._ort = OnnxImageTower.for_encoder(self, quantize=quantize)
            self.backend = "onnx"
        if quantize:
            self.backend = f"onnx-{quantize}"
        tower = "ONNX Runtime for batches, torch for single images" if self._ort_auto else self.backend
        log.info(
            "model %s loaded on %s (%s, image tower: %s), dimension %d",
            spec.describe(),
            self.device,
            self.precision,
            tower,
            self.dim,
        )

    # ------------------------------------------------------------ info
    @property
    def image_size(self) -> int:
        size = getattr(self.model.visual, "image_size", 224)
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    def fingerprint(self) -> str:
        return self.spec.fingerprint()

    def image_gflops(self) -> float:
        """Counted GFLOPs of one image through the image tower (torch's FlopCounterMode; cached):
        how heavy the encoder is next to decoding a photo."""
        if getattr(self, "_gflops", None) is None:
            # A first forward pass costs ~1 s on 2 cores: remember the count per model.
            import hashlib

            key = hashlib.sha256(f"{self.spec.fingerprint()}|{self.spec.name}|{self.image_size}".encode()).hexdigest()
            path = os.path.join(cache_dir(), "gflops", f"{key[:24]}.txt")
            try:
                with open(path) as f:
                    self._gflops = float(f.read())
            except (OSError, ValueError):
                from torch.utils.flop_counter import FlopCounterMode

                x = torch.zeros(1, 3, self.image_size, self.image_size, device=self.device)
                with self._lock, torch.inference_mode(), FlopCounterMode(display=False) as counter:
                    self.model.encode_image(x)
                self._gflops = counter.get_total_flops() / 1e9
                try:
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    with open(path, "w") as f:
                        f.write(f"{self._gflops}\n")
                except OSError:  # read-only cache: count again next time
                    pass
        return self._gflops

    # ------------------------------------------------------------ encode
    def _autocast(self):
        if self.precision in ("fp16", "bf16"):
            dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
            return torch.autocast(device_type=self.device.split(":")[0], dtype=dtype)
        return torch.autocast(device_type=self.device.split(":")[0], enabled=False)

    @staticmethod
    def _normalise(x: torch.Tensor) -> np.ndarray:
        x = x.float()
        x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return x.cpu().numpy().astype(np.float32, copy=False)

    def _pixels_to_input(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        return (x - self._mean) / self._std

    def start_batch_runtime(self) -> None:
        """Create the ONNX Runtime image tower now (auto runtime on CPU) instead of on the
        first batch; the indexer calls this in a thread while decode workers start.
        Callers of ``encode_pixels`` meanwhile wait for it rather than fall back to torch."""
        with self._lock:
            if self._ort is not None or not self._ort_auto:
                return
            try:
                self._ort = OnnxImageTower.for_encoder(self)
                self.backend = "onnx"
                log.info("image tower: ONNX Runtime (CPU)")
            except Exception as exc:  # noqa: BLE001 - torch still works
                log.warning("ONNX Runtime image tower unavailable (%s: %s); using torch", exc.__class__.__name__, exc)
            finally:
                self._ort_auto = False

    def encode_pixels(self, batch: torch.Tensor | np.ndarray) -> np.ndarray:
        """Encode a uint8 NHWC batch (output of pil_transform, stacked)."""
        batch = torch.as_tensor(batch)
        if self._ort is None and self._ort_auto and len(batch) >= ORT_MIN_BATCH:
            self.start_batch_runtime()
        if self._ort is not None:
            with torch.inference_mode():
                x = self._pixels_to_input(batch).contiguous().numpy()
            return self._ort.run(x)  # ONNX Runtime sessions are thread-safe: concurrent batches may overlap
        with self._lock, torch.inference_mode(), self._autocast():
            return self._normalise(self.model.encode_image(self._pixels_to_input(batch)))

    def encode_pil(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.encode_pixels(torch.stack([pil_to_uint8(self.pil_transform(im)) for im in images]))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, getattr(self, "dim", 0)), np.float32)
        tokens = self.tokenizer(list(texts)).to(self.device)
        with self._lock, torch.inference_mode(), self._autocast():
            return self._normalise(self.model.encode_text(tokens))


RUNTIMES = ("auto", "torch", "onnx")
ORT_MIN_BATCH = 8  # auto runtime: smaller batches (queries) stay in torch
ONNX_FORMAT = 1  # bump to invalidate cached exports


class OnnxImageTower:
    """The open_clip image tower exported to ONNX and run by ONNX Runtime (CPU)."""

    def __init__(self, path: str, threads: int):
        self.session = cpu_session(path, threads)
        self.path = path

    def run(self, x: np.ndarray) -> np.ndarray:
        return unit_rows(run_session(self.session, x))

    @classmethod
    def for_encoder(
        cls, enc: Encoder, atol: float = 1e-4, quantize: str | None = None, min_cos: float = 0.98
    ) -> OnnxImageTower:
        """Export (once, cached) and verify against torch on a probe batch.

        fp32 must match torch within ``atol``; int8 (dynamic weight quantization,
        opt-in) must keep every probe vector within cosine ``min_cos`` of fp32's.
        """
        import hashlib

        import open_clip

        key = hashlib.sha256(
            "|".join(
                [
                    enc.spec.fingerprint(),
                    enc.spec.name,
                    str(enc.image_size),
                    open_clip.__version__,
                    torch.__version__,
                    str(ONNX_FORMAT),
                ]
            ).encode()
        ).hexdigest()[:24]
        path = os.path.join(cache_dir(), "onnx", f"image-{key}.onnx")
        if not os.path.exists(path):
            _export_image_tower(enc, path)
        import onnxruntime

        # The check runs once per (export, ONNX Runtime version): a marker records that it passed,
        # so later runs skip two cold forward passes (~2 s of every `glimpse index` start-up).
        probe = torch.from_numpy(probe_pixels(enc.image_size))
        with torch.inference_mode():
            x = enc._pixels_to_input(probe)
        marker = f"{path}.verified-ort{onnxruntime.__version__}-{atol}"
        threads = enc.ort_threads or torch.get_num_threads()
        tower = None
        if not os.path.exists(marker):
            with torch.inference_mode():
                want = enc._normalise(enc.model.encode_image(x))
            tower = cls(path, threads)
            err = float(np.abs(tower.run(x.numpy()) - want).max())
            if not err <= atol:
                raise RuntimeError(f"ONNX image tower differs from torch by {err:.2e} (> {atol})")
            log.debug("ONNX image tower %s matches torch (max abs diff %.1e)", path, err)
            _touch(marker)
        if quantize == "int8":  # checked against the float32 tower, itself within atol of torch
            return cls(ensure_int8(path, x.numpy(), min_cos), threads)
        return tower or cls(path, threads)


def _touch(path: str) -> None:
    try:
        with open(path, "w") as f:
            f.write("ok\n")
    except OSError:  # read-only cache: verify again next time
        pass


def _export_image_tower(enc: Encoder, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    log.info("exporting the image tower of %s to ONNX (once; cached in %s)", enc.spec.describe(), os.path.dirname(path))
    export_onnx(enc.model, "encode_image", torch.zeros(2, 3, enc.image_size, enc.image_size), path, "pixels")


def truncatable_text(model: torch.nn.Module) -> torch.nn.Module | None:
    """``model.encode_text`` over tokens cut just after the batch's last end-of-text token, where that gives
    the same vectors: open_clip's ``CLIP`` text tower with a causal mask, pooled at the end-of-text token.
    Each position then sees only the ones before it, so the padding after the end changes nothing, and a
    query of three words runs over a handful of positions instead of the context's 77. None for any other
    text tower (a Hugging Face one, a mask-free one pooled at the last position, custom blocks): it keeps
    the full length.

    The attention is written out here (the blocks' own weights, ``scaled_dot_product_attention``): exported
    through ``nn.MultiheadAttention``, the sequence length of the example input is baked into its reshapes."""
    import torch.nn.functional as F
    from open_clip.model import CLIP
    from open_clip.transformer import ResidualAttentionBlock, text_global_pool

    m: Any = model
    if (
        getattr(type(model), "encode_text", None) is not CLIP.encode_text
        or getattr(m, "attn_mask", None) is None
        or getattr(m, "text_pool_type", None) not in ("argmax", "eos")
        or not getattr(m.transformer, "batch_first", False)
    ):
        return None
    for block in m.transformer.resblocks:
        mha = getattr(block, "attn", None)
        if (
            type(block) is not ResidualAttentionBlock
            or hasattr(block, "ln_1_kv")
            or not isinstance(mha, torch.nn.MultiheadAttention)
            or not mha._qkv_same_embed_dim
            or mha.bias_k is not None
            or mha.add_zero_attn
        ):
            return None

    def attention(mha: torch.nn.MultiheadAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        heads = mha.num_heads
        q, k, v = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (heads, t.shape[-1] // heads)).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return mha.out_proj(out.transpose(1, 2).flatten(-2))

    class _Text(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, text: torch.Tensor) -> torch.Tensor:
            n = text.shape[1]
            cast_dtype = m.transformer.get_cast_dtype()
            x = m.token_embedding(text).to(cast_dtype) + m.positional_embedding[:n].to(cast_dtype)
            mask = m.attn_mask[:n, :n].to(x.dtype)
            for block in m.transformer.resblocks:
                x = x + block.ls_1(attention(block.attn, block.ln_1(x), mask))
                x = x + block.ls_2(block.mlp(block.ln_2(x)))
            x = m.ln_final(x)
            x = text_global_pool(x, text, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))
            if m.text_projection is not None:
                x = m.text_projection(x) if isinstance(m.text_projection, torch.nn.Linear) else x @ m.text_projection
            return x

    return _Text().eval()


def export_onnx(
    model: torch.nn.Module, method: str, dummy: torch.Tensor, path: str, input_name: str, tokens_axis: bool = False
) -> None:
    """torch.onnx export of ``model.<method>(x)`` with a dynamic batch axis (and a dynamic axis 1, the
    tokens, with ``tokens_axis``); atomic write."""

    class _Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return getattr(self.model, method)(x)

    import warnings

    tmp = f"{path}.{os.getpid()}.tmp"
    axes = {0: "batch", 1: "tokens"} if tokens_axis else {0: "batch"}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused attention kernel has no ONNX export
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Tower().eval(),
                (dummy,),
                tmp,
                input_names=[input_name],
                output_names=["embedding"],
                dynamic_axes={input_name: axes, "embedding": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        os.replace(tmp, path)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        if os.path.exists(tmp):
            os.unlink(tmp)


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    """HWC uint8 tensor of an RGB image (cheap to send between processes)."""
    return torch.from_numpy(to_uint8_array(img))


def _split_transform(preprocess) -> tuple[Callable[[Image.Image], Image.Image], tuple, tuple]:
    """Split open_clip's Compose into its PIL prefix and (mean, std)."""
    from torchvision import transforms as T

    steps = list(getattr(preprocess, "transforms", []))
    idx = next((i for i, t in enumerate(steps) if isinstance(t, T.ToTensor)), None)
    norm = next((t for t in steps if isinstance(t, T.Normalize)), None)
    if idx is None or norm is None:
        raise ModelLoadError("unsupported preprocessing pipeline: expected ToTensor and Normalize steps")
    return T.Compose(steps[:idx]), tuple(float(m) for m in norm.mean), tuple(float(s) for s in norm.std)


def _load_hint(spec: ModelSpec, exc: Exception) -> str:
    msg = f"could not load model {spec.describe()}: {exc}"
    if spec.pretrained and spec.pretrained != RANDOM_INIT and not os.path.isfile(spec.pretrained):
        msg += (
            "\nThe weights are downloaded by open_clip on first use; without network access point Glimpse at a "
            "local model instead: --model local-dir:DIR (a folder with open_clip_config.json and weights), "
            "or --model NAME --pretrained /path/to/checkpoint.safetensors"
        )
    return msg
