"""Read captions: JSONL / CSV manifests and sidecar ``NAME.txt`` files.

Manifest shapes (what COCO / Flickr30k-style datasets are usually turned into):
JSONL lines ``{"path": ..., "caption": ...}`` or ``{"path": ..., "captions": [...]}``,
or CSV with ``path`` and ``caption`` columns. Several rows per image are allowed.
Relative paths resolve against the manifest's folder.
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from pathlib import Path


class ManifestError(Exception):
    pass


def read_manifest(manifest: str | os.PathLike) -> dict[str, list[str]]:
    """Absolute image path -> captions (in file order, duplicates removed)."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ManifestError(f"caption file not found: {manifest}")
    base = manifest.resolve().parent
    out: dict[str, list[str]] = defaultdict(list)

    def add(path: str | None, captions, where: str) -> None:
        if not path:
            raise ManifestError(f"{manifest}:{where}: missing 'path'")
        full = os.path.normpath(os.path.join(base, os.path.expanduser(str(path))))
        if isinstance(captions, str):
            captions = [captions]
        for c in captions or []:
            c = str(c).strip()
            if c and c not in out[full]:
                out[full].append(c)

    if manifest.suffix.lower() == ".csv":
        with open(manifest, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "path" not in reader.fieldnames or "caption" not in reader.fieldnames:
                raise ManifestError(f"{manifest}: CSV needs 'path' and 'caption' columns, found {reader.fieldnames}")
            for n, row in enumerate(reader, start=2):
                add(row.get("path"), row.get("caption"), f"line {n}")
    else:
        with open(manifest, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ManifestError(f"{manifest}:{n}: not valid JSON ({exc.msg})") from exc
                if not isinstance(rec, dict):
                    raise ManifestError(f"{manifest}:{n}: expected an object with 'path' and 'caption'")
                add(rec.get("path"), rec.get("captions", rec.get("caption")), f"line {n}")
    return dict(out)


def sidecar_captions(image_path: str) -> list[str]:
    """Captions from ``photo.txt`` (or ``photo.jpg.txt``) beside ``photo.jpg``: one per non-empty line."""
    for candidate in (os.path.splitext(image_path)[0] + ".txt", image_path + ".txt"):
        try:
            with open(candidate, encoding="utf-8", errors="replace") as f:
                return [line.strip() for line in f if line.strip()]
        except OSError:
            continue
    return []
