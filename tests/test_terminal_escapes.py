"""Text from disk never drives the terminal it is shown on.

A black-box attack named files with terminal escapes (OSC 52, which writes the clipboard, ended by
BEL; CSI 2J, which clears the screen) and they reached the terminal raw through `glimpse search`,
`glimpse stats` and the index run's log. Here such names, a sidecar caption holding escapes, a
dangling link and a broken file named with them (failed rows, logged) and a caption cut to length
(a job warning naming the file) are indexed; every output of the CLI holds no raw control character,
shows the names escaped the way undecodable bytes are, and `--json` still gives the exact values.
"""

from __future__ import annotations

import json
import os
import re

from conftest import draw_image, make_images

OSC52 = "clip\x1b]52;c;ZWNobyBwd25lZA==\x07"  # "echo pwned" to the clipboard
CLEAR = "clear\x1b[2J\x1b[H"
C1 = "csi\u009b31m"
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # any control character but a line break or tab


def test_names_captions_and_errors_from_disk_are_escaped_on_the_terminal(tmp_path, glimpse, tiny_model):
    pics = tmp_path / "pics"
    make_images(pics, 2)
    draw_image(10).save(pics / f"{OSC52}.png")
    draw_image(11).save(pics / f"{CLEAR}.png")
    draw_image(12).save(pics / f"{C1}.png")
    (pics / f"{CLEAR}.txt").write_text(f"a caption that rings\x07 and {CLEAR}\n")
    (pics / f"broken{CLEAR}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a header, no image
    os.symlink(tmp_path / "nowhere.png", pics / f"gone{OSC52}.png")
    manifest = tmp_path / "captions.jsonl"
    manifest.write_text(json.dumps({"path": f"pics/{OSC52}.png", "caption": "long " * 500}) + "\n")

    runs = {
        "index": glimpse("index", str(pics), "--captions", str(manifest), "--model", tiny_model),
        "search": glimpse("search", "anything", "-k", "50"),
        "search keywords": glimpse("search", "clear caption", "--mode", "keywords"),
        "stats": glimpse("stats"),
    }
    for name, proc in runs.items():
        for stream, out in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            assert not RAW.search(out), (name, stream, RAW.findall(out), out[-2000:])
    listed = runs["search"].stdout
    for escaped in ("clip\\x1b]52;c;ZWNobyBwd25lZA==\\x07.png", "clear\\x1b[2J\\x1b[H.png", "csi\\u009b31m.png"):
        assert escaped in listed
    assert "a caption that rings\\x07 and clear\\x1b[2J" in runs["search keywords"].stdout
    stats = runs["stats"].stdout
    assert f"{pics}/goneclip\\x1b]52;c;ZWNobyBwd25lZA==\\x07.png: broken symlink" in stats
    assert f"{pics}/brokenclear\\x1b[2J\\x1b[H.png:" in stats
    assert "clip\\x1b]52;c;ZWNobyBwd25lZA==\\x07.png: manifest caption cut" in stats
    assert "failed: " in runs["index"].stderr and "goneclip\\x1b]52" in runs["index"].stderr  # the log line

    # JSON: the same values, exactly; no raw control character in the text either.
    for args in (("search", "anything", "-k", "50", "--json"), ("stats", "--json")):
        out = glimpse(*args).stdout
        assert not RAW.search(out), args
        json.loads(out)
    paths = {r["path"] for r in json.loads(glimpse("search", "anything", "-k", "50", "--json").stdout)}
    assert f"{pics}/clear\\x1b[2J\\x1b[H.png" in paths
    keyword = json.loads(glimpse("search", "clear caption", "--mode", "keywords", "--json").stdout)
    assert f"a caption that rings\x07 and {CLEAR}" in [r["caption"] for r in keyword]  # a caption is text, exact
