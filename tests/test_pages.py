"""The search page in a real headless Chromium: text search, upload (picker, drop, paste), more like this,
filters, infinite scroll, phone width and keyboard. Each test saves a screenshot under test-output/."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from web_support import XSS_CAPTION, corpus, engine, image_id, server  # noqa: F401 - corpus, engine, server: shared module-scoped fixtures

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    pg.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    pg.problems = problems
    yield pg
    context.close()


def shot(page, output_dir: Path, name: str) -> None:
    page.screenshot(path=str(output_dir / f"pages-{name}.png"), full_page=True)


def card_ids(page) -> list[int]:
    return [int(x) for x in page.eval_on_selector_all("#results .card", "els => els.map(e => e.dataset.id)")]


def wait_thumbs(page) -> None:
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"
    )


def test_text_search(page, server, engine, output_dir):
    page.goto(server.url + "/")
    assert page.locator("#welcome").is_visible()
    assert page.evaluate("document.activeElement.id") == "q"
    shot(page, output_dir, "01-empty")
    page.keyboard.press("Enter")  # nothing typed: a hint, no request, the form stays usable
    assert "Type something" in page.locator("#error").inner_text()
    assert page.evaluate("[...document.querySelectorAll('#search [disabled]')].length") == 0
    page.fill("#q", "a sunny beach")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"[?&]q=a\+sunny\+beach"))
    assert len(card_ids(page)) == 22
    assert "k=" not in page.url and "folder=" not in page.url  # empty filters stay out of bookmarks
    first = page.locator("#results .card").first
    assert re.fullmatch(r"-?\d\.\d{3}", first.locator(".score").inner_text())
    assert first.locator(".path").inner_text().startswith("/")
    # The tiny random model scores every real query under its relevance floor: the page says so
    # (tests/test_pages_floor_dupes.py sets a floor between results to check the count and the divider).
    # The tiny random model scores every cosine under its relevance floor, so in auto mode the results above
    # the floor are exactly the keyword matches; they come first, then one "weaker matches" divider.
    from search.query.kinds import Paging, TextQuery

    hits = engine.search(TextQuery("a sunny beach", mode="auto"), page=Paging(k=24)).results
    keyword_hits = sum("keywords" in r.matched for r in hits)
    items = page.eval_on_selector_all("#results > li", "els => els.map(e => e.className)")
    assert 0 < keyword_hits < 22 and items.index("divider") == keyword_hits and items.count("divider") == 1
    assert page.locator("#status").inner_text().startswith("22 results for “a sunny beach”")
    wait_thumbs(page)
    # The hostile caption and file name are shown as text, never run.
    assert page.get_by_text(XSS_CAPTION).count() == 1
    assert page.get_by_text("odd <name> & 'quote'.png").count() >= 1
    shot(page, output_dir, "02-text-search")
    # Bookmarkable: opening the URL again renders the same results on the server.
    page.goto(page.url)
    assert len(card_ids(page)) == 22
    assert page.problems == []


def test_infinite_scroll_loads_every_page_once(page, server, output_dir):
    page.goto(server.url + "/?q=beach&k=5")
    page.locator("#results .card").nth(5).wait_for()
    count = "() => document.querySelectorAll('#results .card').length"
    for _ in range(40):  # scroll as a reader does, until the last page has arrived (bounded)
        if page.evaluate(count) == 22:
            break
        page.mouse.wheel(0, 5000)
        page.wait_for_timeout(250)
    page.wait_for_function(count + " === 22")
    page.wait_for_selector("#more", state="hidden")
    ids = card_ids(page)
    assert len(ids) == len(set(ids)) == 22
    assert page.locator("#status").inner_text() == "22 results"
    # keyword hits (the 13 files named or foldered "beach") above the floor, the rest below: one divider
    items = page.eval_on_selector_all("#results > li", "els => els.map(e => e.className)")
    assert items.index("divider") == 13 and items.count("divider") == 1  # drawn once, not again on later pages
    shot(page, output_dir, "03-infinite-scroll")
    assert page.problems == []


def test_upload_with_file_picker(page, server, engine, corpus, output_dir):
    page.goto(server.url + "/?q=beach")
    path = corpus.files["beach_03.png"]
    page.set_input_files("#file", str(path))
    page.wait_for_function(
        "() => document.querySelectorAll('#results .card').length > 0 && "
        "!document.querySelector('#results').classList.contains('loading')"
    )
    assert page.locator("#query-panel").is_visible()
    assert page.locator("#query-name").inner_text() == "beach_03.png"
    assert page.evaluate("document.getElementById('query-image').src").startswith("blob:")
    assert card_ids(page)[0] == image_id(engine, path)
    assert page.locator("#results .card .score").first.inner_text().startswith(("0.99", "1.00"))
    assert page.input_value("#q") == "" and "q=" not in page.url
    wait_thumbs(page)
    shot(page, output_dir, "04-upload")
    assert page.problems == []


def _file_in_page(page, image_url: str, name: str, what: str) -> None:
    """Build a File in the page from a served image, then drop or paste it the way a browser would."""
    page.evaluate(
        """async ([url, name, what]) => {
        const blob = await (await fetch(url)).blob();
        const file = new File([blob], name, {type: blob.type});
        const dt = new DataTransfer();
        dt.items.add(file);
        if (what === 'drop') {
            document.body.dispatchEvent(new DragEvent('dragenter', {dataTransfer: dt, bubbles: true}));
            document.body.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
        } else {
            document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true, cancelable: true}));
        }
    }""",
        [image_url, name, what],
    )


@pytest.mark.parametrize("how", ["drop", "paste"])
def test_upload_by_drop_and_paste(page, server, engine, corpus, output_dir, how):
    page.goto(server.url + "/")
    iid = image_id(engine, corpus.files["city_06.jpg"])
    _file_in_page(page, f"/api/images/{iid}/file", f"{how}ped.jpg", how)
    page.wait_for_function("() => document.querySelectorAll('#results .card').length > 0")
    assert card_ids(page)[0] == iid
    assert page.locator("#query-name").inner_text() == f"{how}ped.jpg"
    assert page.locator("#drop").is_hidden() and page.locator("#welcome").count() == 0
    wait_thumbs(page)
    shot(page, output_dir, f"05-{how}")
    assert page.problems == []


def test_upload_errors_are_shown(page, server, output_dir, tmp_path):
    page.goto(server.url + "/")
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"this is not a picture at all")
    page.set_input_files("#file", str(fake))
    page.locator("#error").wait_for(state="visible")
    assert "not a supported image" in page.locator("#error").inner_text()
    shot(page, output_dir, "06-upload-error")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    page.set_input_files("#file", str(text))
    page.wait_for_function("() => document.getElementById('error').textContent.includes('not an image')")


def test_more_like_this(page, server, engine, corpus, output_dir):
    page.goto(server.url + "/?q=waves")
    first = page.locator("#results .card").first
    source = int(first.get_attribute("data-id"))
    first.get_by_role("link", name="More like this").click()
    page.wait_for_url(re.compile(rf"[?&]like={source}\b"))
    assert page.locator("#query-panel").is_visible()
    assert page.locator("#query-panel .label").inner_text().lower() == "images like"
    ids = card_ids(page)
    assert ids and source not in ids
    assert page.input_value("#q") == ""
    wait_thumbs(page)
    shot(page, output_dir, "07-more-like-this")
    # Filters apply to "more like this" too, and keep it.
    page.locator(".filters summary").click()
    page.fill("input[name=folder]", str(corpus.folder("city")))
    page.click(".fields button[type=submit]")
    page.wait_for_url(re.compile(r"folder="))
    assert f"like={source}" in page.url
    assert all("/city/" in p for p in page.locator("#results .card .path").all_inner_texts())
    assert page.problems == []


def test_filters(page, server, corpus, output_dir):
    page.goto(server.url + "/?q=beach")
    page.locator(".filters summary").click()
    page.fill("input[name=date_from]", "2023-01-01")
    page.select_option("select[name=order]", "date")
    page.click(".fields button[type=submit]")
    page.wait_for_url(re.compile(r"date_from=2023-01-01"))
    dates = page.locator("#results .card time").all_inner_texts()
    assert dates and all(d >= "2023-01-01" for d in dates) and dates == sorted(dates, reverse=True)
    assert "order=date" in page.url and page.locator(".filters").get_attribute("open") is not None
    shot(page, output_dir, "08-filters")
    # A minimum score nothing reaches: a clear empty state, not a blank page.
    page.fill("input[name=min_score]", "0.99")
    page.click(".fields button[type=submit]")
    page.locator("#empty").wait_for()
    assert "removing a filter" in page.locator("#empty").inner_text()
    shot(page, output_dir, "09-no-results")
    assert page.problems == []


def test_mode_selector_and_highlighted_match(page, server, output_dir):
    page.goto(server.url + "/?q=bold+caption")
    modes = page.eval_on_selector_all("select[name=mode] option", "els => els.map(e => e.value)")
    assert modes == ["auto", "images", "captions", "keywords"]
    assert page.eval_on_selector("select[name=mode]", "e => e.value") == "auto"
    first = page.locator("#results .card").first
    # The hostile caption matched "bold" and "caption": those words marked, the rest shown as text.
    assert first.locator(".caption mark").all_inner_texts() == ["bold", "caption"]
    assert first.locator(".caption").inner_text() == XSS_CAPTION
    assert page.locator("#results script, #results b").count() == 0
    shot(page, output_dir, "11-highlight")
    page.locator(".filters summary").click()
    page.select_option("select[name=mode]", "keywords")
    page.click(".fields button[type=submit]")
    page.wait_for_url(re.compile(r"mode=keywords"))
    assert len(card_ids(page)) == 1  # words only: the one image whose caption has them
    assert page.eval_on_selector("select[name=mode]", "e => e.value") == "keywords"
    assert page.problems == []


def test_bad_parameter_shows_error(page, server, output_dir):
    resp = page.goto(server.url + "/?q=beach&min_score=lots")
    assert resp.status == 400
    assert "min_score must be a number" in page.locator("#error").inner_text()
    shot(page, output_dir, "10-error")


def test_phone_width(browser, server, corpus, output_dir):
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, device_scale_factor=2
    )
    page = context.new_page()
    try:
        page.goto(server.url + "/?q=beach&k=6")
        wait_thumbs(page)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        box = page.locator("#results .card").first.bounding_box()
        assert 120 < box["width"] < 200  # two columns
        shot(page, output_dir, "11-phone")
        iid = page.locator("#results .card").first.get_attribute("data-id")
        page.goto(f"{server.url}/image/{iid}")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        shot(page, output_dir, "12-phone-detail")
    finally:
        context.close()


def test_keyboard_only(page, server, engine, corpus, output_dir):
    page.goto(server.url + "/image/1")
    page.keyboard.press("/")  # the detail page has a search box too
    assert page.evaluate("document.activeElement.id") == "q"
    page.goto(server.url + "/?q=beach")
    page.locator("body").click(position={"x": 5, "y": 600})
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("tall buildings")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"q=tall\+buildings"))
    # Tab from the search box reaches the upload button and then the first result.
    page.focus("#q")
    seen = []
    for _ in range(30):
        page.keyboard.press("Tab")
        seen.append(
            page.evaluate("document.activeElement.className + '|' + (document.activeElement.textContent || '').trim()")
        )
        if seen[-1].startswith("thumb"):
            break
    assert any("upload" in s for s in seen) and seen[-1].startswith("thumb")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/image/\d+$"))
    assert page.locator(".detail dd.path").inner_text().startswith(str(corpus.root))
    shot(page, output_dir, "13-detail")
    assert page.problems == []
