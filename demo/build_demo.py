"""Rebuild demo/corpus from the project's training corpora (licence-clean sources only).

Picks a fixed random sample of public-domain (Openclipart) and MIT (Tabler Icons,
Fluent Emoji flat) images, copies them, and writes captions.jsonl ({"path","caption"}
per line, paths relative to it) with each image's short human-written captions.
OpenMoji (CC BY-SA) and Noto (Apache-2.0) are left out to keep the notices simple.

    python demo/build_demo.py /work/shared/data/corpora/dev.jsonl
"""

from __future__ import annotations

import json
import random
import re
import shutil
import sys
from pathlib import Path

import text_images  # demo/text_images.py, beside this script
import video_clips  # demo/video_clips.py

# Openclipart folders of concrete things (its icon-theme and shape folders are titled by set
# name, e.g. "Lemon SVG theme", which no one would type to find a hard disk).
CLIPART_TOPICS = {
    "animals",
    "food",
    "plants",
    "transportation",
    "tools",
    "buildings",
    "office",
    "recreation",
    "electronics",
    "containers",
    "people",
    "science",
    "education",
}
PICK = {"openclipart": 120, "tabler-outline": 90, "tabler-filled": 30, "fluent-flat": 60}


JUNK = re.compile(r"svg|eps|http|clip ?art|theme|icons?\b|iconset|converted|\d{2}", re.I)


def short_captions(rec: dict) -> list[str]:
    """Up to two short captions that read like names: no keyword lists, no set/file-format titles."""
    caps: list[str] = []
    for c in rec["captions"]:
        if "," in c or len(c.split()) > 6 or JUNK.search(c) or c.lower() in (x.lower() for x in caps):
            continue
        caps.append(c)
    return caps[:2] or rec["captions"][:1]


def main(manifest: str, out: str = str(Path(__file__).parent / "corpus")) -> None:
    src = Path(manifest).parent
    recs = [json.loads(line) for line in open(manifest, encoding="utf-8")]
    rng = random.Random(5)
    out_dir = Path(out)
    lines = []
    for style, n in PICK.items():
        pool = [
            r
            for r in recs
            if r["style"] == style and (style != "openclipart" or r["category"].split("/")[0] in CLIPART_TOPICS)
        ]
        for r in sorted(rng.sample(pool, n), key=lambda r: r["path"]):
            rel = Path("images") / style / Path(r["path"]).name
            if (out_dir / rel).exists():  # same file name twice: keep the first
                continue
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / r["path"], out_dir / rel)
            for c in short_captions(r):
                lines.append(
                    {
                        "path": rel.as_posix(),
                        "caption": c,
                        "group": r["group"],
                        "source": r["corpus"],
                        "license": r["license"].split(" (")[0],
                    }
                )
    text_images.make(out_dir / "images" / "text")  # a few pictures found only by the text in them (OCR)
    video_clips.make(out_dir / "videos")  # two short videos of its own drawings, a scene each 2.5 s
    (out_dir / "captions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    print(f"{len({x['path'] for x in lines})} images, {len(lines)} captions -> {out_dir}")


if __name__ == "__main__":
    main(*sys.argv[1:])
