"""Issue 26: the detail page shows the text read in an image and outlines where the query's words are, in a
real headless Chromium over the real server, on an image indexed with OCR on (RapidOCR reads it).

The outlines are checked against where the words were drawn (Pillow's text box), as fractions of the
picture on the page: the boxes are stored normalised to the upright image, so they must land on the
words at whatever size the page shows it.
"""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw, ImageFont

from test_pages import browser, shot  # noqa: F401 - browser: a fixture
from tests.conftest import glimpse_cmd
from web_support import LiveServer

pytest.importorskip("rapidocr")

SIZE = (640, 360)
LINES = {"top": ("Platform schedule", (24, 30)), "code": ("Gate KX4471B", (330, 270))}


@pytest.fixture(scope="module")
def drawn(tmp_path_factory, tiny_model):
    """A home holding one picture with two lines of text (read with OCR on), and where each line was drawn
    as fractions of the picture: {name: (x0, y0, x1, y1)}."""
    root = tmp_path_factory.mktemp("ocr-page")
    pics, home = root / "pics", root / "home"
    pics.mkdir()
    img = Image.new("RGB", SIZE, (235, 240, 245))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=34)
    where = {}
    for name, (text, xy) in LINES.items():
        draw.text(xy, text, fill="black", font=font)
        x0, y0, x1, y1 = draw.textbbox(xy, text, font=font)
        where[name] = (x0 / SIZE[0], y0 / SIZE[1], x1 / SIZE[0], y1 / SIZE[1])
    img.save(pics / "station.png")
    Image.new("RGB", (200, 150), (90, 140, 200)).save(pics / "sky.png")  # no text: no outlines, no text shown
    glimpse_cmd("index", str(pics), "--model", tiny_model, "--ocr", home=home, env={"GLIMPSE_OCR": "on"})
    return home, where


@pytest.fixture(scope="module")
def server(drawn):
    from search.paths import Paths
    from web.app import create_app

    live = LiveServer(create_app(Paths.resolve(drawn[0]), config={"GLIMPSE_ALLOWED_HOSTS": ["127.0.0.1"]}))
    yield live
    live.close()


def outlines(pg) -> list[tuple[float, float, float, float]]:
    """Each outlined box as fractions of the picture shown: (x0, y0, x1, y1) of its rendered bounds."""
    pg.wait_for_function("() => (i => i.complete && i.naturalWidth > 0)(document.querySelector('.detail img'))")
    return [
        tuple(v)
        for v in pg.evaluate(
            """() => {
            const p = document.querySelector('.detail img').getBoundingClientRect();
            return [...document.querySelectorAll('.text-box')].map(b => {
                const r = b.getBoundingClientRect();
                return [(r.left - p.left) / p.width, (r.top - p.top) / p.height,
                        (r.right - p.left) / p.width, (r.bottom - p.top) / p.height];
            });
        }"""
        )
    ]


def covers(box, drawn_box, slack: float = 0.04) -> bool:
    """The outline holds the drawn words, and is not much larger than them."""
    x0, y0, x1, y1 = box
    a0, b0, a1, b1 = drawn_box
    inside = x0 <= a0 + slack and y0 <= b0 + slack and x1 >= a1 - slack and y1 >= b1 - slack
    tight = x0 >= a0 - 3 * slack and y0 >= b0 - 3 * slack and x1 <= a1 + 3 * slack and y1 <= b1 + 3 * slack
    return inside and tight


def test_detail_page_outlines_the_matched_words_and_shows_the_text(browser, server, drawn, output_dir):
    _, where = drawn
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    try:
        # Found by a code's prefix; the card links to the detail page with the word it matched.
        pg.goto(server.url + "/?q=kx447&mode=keywords")
        card = pg.locator("#results .card")
        assert card.count() == 1
        assert card.locator("p.ocr mark").inner_text() == "KX4471B"
        card.locator("a.thumb").click()
        pg.wait_for_url("**/image/*?q=KX4471B")
        (box,) = outlines(pg)  # only the line holding the word
        assert covers(box, where["code"]), (box, where["code"])
        text = pg.locator(".detail dd.image-text")
        assert text.inner_text().splitlines() == ["Platform schedule", "Gate KX4471B"]
        assert [m.inner_text() for m in text.locator("mark").all()] == ["KX4471B"]
        shot(pg, output_dir, "ocr-detail-query")

        # The same page at a phone's width: the outline follows the picture's size.
        pg.set_viewport_size({"width": 360, "height": 740})
        (small,) = outlines(pg)
        assert covers(small, where["code"]), (small, where["code"])

        # Without a query every line is outlined, nothing marked.
        pg.set_viewport_size({"width": 1280, "height": 900})
        pg.goto(pg.url.split("?")[0])
        boxes = sorted(outlines(pg), key=lambda b: b[1])
        assert len(boxes) == 2
        assert covers(boxes[0], where["top"]) and covers(boxes[1], where["code"]), (boxes, where)
        assert pg.locator(".detail dd.image-text mark").count() == 0

        # A query none of its words match: the text shown, nothing outlined.
        pg.goto(pg.url + "?q=zebra")
        assert outlines(pg) == [] and pg.locator(".detail dd.image-text").count() == 1
        shot(pg, output_dir, "ocr-detail-no-match")
    finally:
        context.close()


def test_an_image_without_text_shows_none(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    try:
        pg.goto(server.url + "/?q=sky&mode=keywords")
        pg.locator("#results .card a.thumb").first.click()
        pg.wait_for_url("**/image/*")
        assert outlines(pg) == []
        assert pg.locator(".detail dd.image-text").count() == 0
        assert "Text in the image" not in pg.locator(".detail").inner_text()
    finally:
        context.close()
