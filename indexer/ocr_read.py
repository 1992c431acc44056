"""Reading the text in one image with RapidOCR (PP-OCR detection, 180° classifier, recognition, on ONNX Runtime).

What we add to RapidOCR's own pipeline is the decode and the detection size:

- the image is decoded by :func:`search.media.decode.load_rgb_bounded` (upright by its EXIF
  orientation, flattened, under the process's decode budget ``GLIMPSE_DECODE_BUDGET_MB``); a JPEG
  photo decodes at a reduced DCT scale no smaller than :data:`DRAFT` on its short side;
- detection runs at the image's own size up to :data:`MAX_PIXELS` (a 2560 x 1600 or 4K screenshot keeps
  its 11-pixel text; RapidOCR alone shrinks anything over 2,000 pixels), and larger images are reduced to
  that; small images are enlarged to 736 on the short side, as RapidOCR does.

Boxes come back as fractions of the upright image, so they outline the words on any rendition of it.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from search.media.decode import load_rgb_bounded
from search.settings import settings
from search.store.ocr import BUNDLED_LANG, TextLine, engine_id  # noqa: F401  (engine_id: re-exported for the indexer)

# JPEGs decode at a DCT scale keeping the short side >= this (a 12 MP photo: 2016 x 1512).
DRAFT = 1024
# The most pixels detection looks at: a 4K screenshot (3840 x 2160) whole.
MAX_PIXELS = 3840 * 2160
# Lines RapidOCR itself drops below this confidence (its default); the keyword index has its own cut.
KEEP_SCORE = 0.5


def rapidocr_params(threads: int, cuda: bool, lang: str = BUNDLED_LANG) -> dict:
    """RapidOCR's settings; ``lang`` other than the bundled model's: its PP-OCRv5 recognition model, which
    RapidOCR downloads into its package on first use."""
    model: dict = {}
    if lang != BUNDLED_LANG:
        from rapidocr.utils.typings import LangRec, ModelType, OCRVersion

        model = {
            "Rec.lang_type": LangRec(lang),
            "Rec.ocr_version": OCRVersion.PPOCRV5,
            "Rec.model_type": ModelType.MOBILE,
        }
    return {
        **model,
        "Global.log_level": "error",
        "Global.text_score": KEEP_SCORE,
        # We choose the size (detection_size); RapidOCR must not shrink it again.
        "Global.max_side_len": 1 << 16,
        "EngineConfig.onnxruntime.intra_op_num_threads": threads,
        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        "EngineConfig.onnxruntime.use_cuda": cuda,
    }


def detection_size(width: int, height: int) -> tuple[int, int]:
    """The size detection runs at: the image's own up to MAX_PIXELS, else reduced to that."""
    scale = min(1.0, math.sqrt(MAX_PIXELS / max(1, width * height)))
    return max(1, round(width * scale)), max(1, round(height * scale))


class TextReader:
    """One RapidOCR instance (one per worker process); :meth:`read` one image at a time."""

    def __init__(self, threads: int = 1, cuda: bool = False, lang: str | None = None):
        from rapidocr import RapidOCR  # heavy (OpenCV): only where text is read

        lang = lang or settings()["GLIMPSE_OCR_LANG"]  # a spawned worker sees the indexer's settings
        self.ocr = RapidOCR(params=rapidocr_params(threads, cuda, lang))

    def read_image(self, img: Image.Image) -> list[TextLine]:
        """The lines in an upright RGB image, top to bottom."""
        w, h = img.size
        size = detection_size(w, h)
        if size != (w, h):
            img = img.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
        bgr = np.ascontiguousarray(np.asarray(img, dtype=np.uint8)[:, :, ::-1])
        res = self.ocr(bgr)
        boxes, txts, scores = getattr(res, "boxes", None), getattr(res, "txts", None), getattr(res, "scores", None)
        if boxes is None or not txts or scores is None:
            return []
        dw, dh = float(size[0]), float(size[1])
        lines = []
        for box, txt, score in zip(boxes, txts, scores):
            pts = np.asarray(box, dtype=np.float64).reshape(-1, 2)[:4]
            norm = tuple(
                min(1.0, max(0.0, float(v))) for x, y in pts for v in (x / dw, y / dh)
            )  # corners as fractions of the upright image
            text = " ".join(str(txt).split())
            if text:
                lines.append(TextLine(text, float(score), norm))
        return lines

    def read(self, path: str) -> list[TextLine]:
        """Decode ``path`` (upright, bounded) and read it; ImageDecodeError when it cannot be decoded."""
        return self.read_image(load_rgb_bounded(path, DRAFT))
