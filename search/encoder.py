"""open_clip wrapper: one loaded model, normalised float32 vectors, thread-safe.

Loading goes through open_clip's own factory, so a zoo name + pretrained tag,
a checkpoint file, or a ``local-dir:`` folder all behave as open_clip defines.
Preprocessing is split in two: the PIL part (resize, crop) runs wherever the
image is decoded (worker processes), the tensor part (scale, normalise) runs
batched on the encoder's device.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

from search.model_spec import DEFAULT_MODEL, DEFAULT_PRETRAINED, LOCAL_DIR, RANDOM_INIT, ModelLoadError, ModelSpec  # noqa: F401


def pick_device(device: str | None = None) -> str:
    if device and device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


class Encoder:
    """A loaded open_clip model with its tokenizer and split preprocessing."""

    def __init__(self, spec: ModelSpec, device: str | None = None, precision: str = "auto"):
        import open_clip

        self.spec = spec
        self.device = pick_device(device)
        # bf16/fp16 on a CPU without native support is several times slower.
        self.precision = ("fp16" if self.device.startswith("cuda") else "fp32") if precision == "auto" else precision
        self._lock = threading.Lock()
        pretrained = None if spec.pretrained in (None, RANDOM_INIT) else spec.pretrained
        if spec.pretrained == RANDOM_INIT or (not pretrained and not spec.name.startswith(LOCAL_DIR)):
            log.warning("model %s has no pretrained weights: random init (seed 0), useful for benchmarks only", spec.name)
            torch.manual_seed(0)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(spec.name, pretrained=pretrained, device=self.device)
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
        log.info("model %s loaded on %s (%s), dimension %d", spec.describe(), self.device, self.precision, self.dim)

    # ------------------------------------------------------------ info
    @property
    def image_size(self) -> int:
        size = getattr(self.model.visual, "image_size", 224)
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    def fingerprint(self) -> str:
        return self.spec.fingerprint()

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

    def encode_pixels(self, batch: torch.Tensor) -> np.ndarray:
        """Encode a uint8 NHWC batch (output of pil_transform, stacked)."""
        with self._lock, torch.inference_mode(), self._autocast():
            x = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
            x = (x - self._mean) / self._std
            return self._normalise(self.model.encode_image(x))

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


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    """HWC uint8 tensor of an RGB image (cheap to send between processes)."""
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy())


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
