"""A few demo pictures with text in them (issue 26), found by a word they show: the demo corpus's own
drawings with a sign or a label, a number plate, a note, and one turned upside down.

Rendered with Pillow's built-in font (no system font needed); no captions, so only the text read from
them (OCR, on by default) finds them: try ``haircuts``, ``ferry``, ``KX447`` or ``invoice``.

    python demo/text_images.py [demo/corpus/images/text]
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

CORPUS = Path(__file__).parent / "corpus" / "images"


def _board(text: str, size: int, fill, ink) -> Image.Image:
    font = ImageFont.load_default(size=size)
    box = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
    board = Image.new("RGB", (box[2] + 48, box[3] + 40), fill)
    d = ImageDraw.Draw(board)
    d.rectangle([2, 2, board.width - 3, board.height - 3], outline=ink, width=4)
    d.text((24, 20 - box[1] // 2), text, fill=ink, font=font)
    return board


def _on_drawing(name: str, board: Image.Image) -> Image.Image:
    canvas = Image.new("RGB", (640, 640), "white")
    with Image.open(CORPUS / "openclipart" / name) as im:
        im = im.convert("RGBA")
        scale = 440 / max(im.size)
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
        canvas.paste(im, ((640 - im.width) // 2, 20), im)
    canvas.paste(board, ((640 - board.width) // 2, 640 - board.height - 30))
    return canvas


def make(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    pictures = {
        "shop_sign.png": _on_drawing(
            "aiga_barber_shop_beauty_salon1.png", _board("HAIRCUTS open 7am", 44, "white", "black")
        ),
        "plate.png": _board("KX4471B", 96, (250, 210, 0), "black"),
        "note.png": _board("Invoice 2041 total 42.00", 40, (250, 250, 240), (20, 20, 80)),
        "ferry_upside_down.png": _board("Harbour FERRY 10:15", 48, (20, 90, 40), "white").rotate(180),
    }
    paths = []
    for name, img in pictures.items():
        img.save(out / name, optimize=True)
        paths.append(out / name)
    return paths


if __name__ == "__main__":
    for p in make(Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS / "text"):
        print(p)
