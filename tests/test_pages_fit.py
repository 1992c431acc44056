"""Page details a new user met, in a real headless Chromium: thumbnails sized for the card at the screen's
pixel ratio, placeholders that fit a phone and do not look like values, no preview for a refused upload,
paths that wrap between folder names."""

from __future__ import annotations

import pytest

from test_pages import browser, page, shot, wait_thumbs  # noqa: F401 - browser, page: fixtures
from web_support import corpus, engine, server  # noqa: F401 - shared module-scoped fixtures


@pytest.mark.parametrize(("scale", "want"), [(1, 320), (2, 640)])
def test_thumbnails_fit_the_card_at_the_pixel_ratio(browser, server, output_dir, scale, want):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=scale)
    pg = context.new_page()
    try:
        pg.goto(server.url + "/?q=beach&k=6")
        wait_thumbs(pg)
        img = pg.locator("#results .card img").first
        css_width = img.evaluate("i => i.getBoundingClientRect().width")
        natural = img.evaluate("i => i.naturalWidth")  # the corpus images are 90-120 px: look at the URL
        assert img.evaluate("i => i.currentSrc").endswith(f"?size={want}"), img.get_attribute("srcset")
        assert want >= css_width * scale * 0.75 and natural > 0  # no worse than a 4:3 upscale
        shot(pg, output_dir, f"fit-thumbs-x{scale}")
    finally:
        context.close()


def test_refused_upload_shows_no_preview(page, server, output_dir, tmp_path):
    page.goto(server.url + "/")
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"this is not a picture at all")
    page.set_input_files("#file", str(fake))
    page.locator("#error").wait_for(state="visible")
    assert "not a supported image" in page.locator("#error").inner_text()
    assert page.locator("#query-panel").is_hidden()
    assert page.get_by_alt_text("Your image").count() == 0 or page.get_by_alt_text("Your image").is_hidden()
    shot(page, output_dir, "fit-upload-refused")


def test_placeholders_on_a_phone(browser, server, output_dir):
    context = browser.new_context(
        viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True, device_scale_factor=2
    )
    pg = context.new_page()
    try:
        pg.goto(server.url + "/")
        fits = pg.evaluate(
            """() => {
            const box = document.getElementById('q'), css = getComputedStyle(box);
            const ctx = document.createElement('canvas').getContext('2d');
            ctx.font = `${css.fontStyle} ${css.fontWeight} ${css.fontSize} ${css.fontFamily}`;
            const room = box.clientWidth - parseFloat(css.paddingLeft) - parseFloat(css.paddingRight);
            return [ctx.measureText(box.placeholder).width, room];
        }"""
        )
        assert fits[0] <= fits[1], f"placeholder {fits[0]:.0f}px wide in a {fits[1]:.0f}px box"
        pg.locator(".filters summary").click()
        hint = pg.get_attribute("input[name=min_score]", "placeholder")
        with pytest.raises(ValueError):
            float(hint)  # an empty field must not look like an active minimum
        shot(pg, output_dir, "fit-phone-placeholders")
    finally:
        context.close()


def test_detail_path_wraps_between_folder_names(browser, server, corpus, output_dir):
    context = browser.new_context(viewport={"width": 320, "height": 700})
    pg = context.new_page()
    try:
        pg.goto(server.url + "/?q=beach&k=1")
        pg.locator("#results .card a.thumb").first.click()
        pg.wait_for_url("**/image/*")
        path = pg.locator(".detail dd.path")
        assert path.inner_text().startswith(str(corpus.root) + "/")
        # Each line of the wrapped path ends at a "/" or at the end: no folder name is cut in two.
        lines = path.evaluate(
            """el => {
            const r = document.createRange(), text = el.textContent, out = []; let top = null, line = '';
            const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
            for (let n = walker.nextNode(); n; n = walker.nextNode()) {
                for (let i = 0; i < n.length; i++) {
                    r.setStart(n, i); r.setEnd(n, i + 1);
                    const t = r.getClientRects()[0]?.top;
                    if (top !== null && t !== undefined && t > top + 2) { out.push(line); line = ''; }
                    if (t !== undefined) top = t;
                    line += n.data[i];
                }
            }
            out.push(line);
            return out;
        }"""
        )
        assert len(lines) > 1 and all(line.endswith("/") for line in lines[:-1]), lines
        shot(pg, output_dir, "fit-detail-path")
    finally:
        context.close()
