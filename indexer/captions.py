"""Read captions: JSONL / CSV manifests and sidecar ``NAME.txt`` files.

Manifest shapes (what COCO / Flickr30k-style datasets are usually turned into):
JSONL lines ``{"path": ..., "caption": ...}`` or ``{"path": ..., "captions": [...]}``,
or CSV with ``path`` and ``caption`` columns. Several rows per image are allowed.
Relative paths resolve against the manifest's folder.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import stat
from collections import defaultdict
from pathlib import Path
from typing import Callable, Sequence

log = logging.getLogger(__name__)


class ManifestError(Exception):
    pass


# Names converted datasets commonly use besides the documented "path" / "caption".
PATH_KEYS = ("path", "image", "image_path", "filepath", "file_name", "filename", "file")
CAPTION_KEYS = ("captions", "caption", "text", "title")


def _first(rec: dict, keys: tuple[str, ...]):
    return next((rec[k] for k in keys if rec.get(k) not in (None, "")), None)


def read_manifest(manifest: str | os.PathLike, search_dirs: Sequence[str] = ()) -> dict[str, list[str]]:
    """Absolute image path -> captions (in file order, duplicates removed).

    Relative paths resolve against the manifest's folder; when no file is there,
    against each of ``search_dirs`` (the folders being indexed).
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ManifestError(f"caption file not found: {manifest}")
    bases = [str(manifest.resolve().parent), *[os.path.abspath(d) for d in search_dirs]]
    out: dict[str, list[str]] = defaultdict(list)

    def resolve(path: str) -> str:
        path = os.path.expanduser(path)
        candidates = [os.path.normpath(os.path.join(b, path)) for b in bases]
        return next((c for c in candidates if os.path.isfile(c)), candidates[0])

    def add(path: str | None, captions, where: str) -> None:
        if not path:
            raise ManifestError(f"{manifest}:{where}: missing 'path'")
        full = resolve(str(path))
        if isinstance(captions, str):
            captions = [captions]
        for c in captions or []:
            c = str(c).strip()
            if c and c not in out[full]:
                out[full].append(c)

    if manifest.suffix.lower() == ".csv":
        with open(manifest, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = set(reader.fieldnames or [])
            if not fields & set(PATH_KEYS) or not fields & set(CAPTION_KEYS):
                raise ManifestError(f"{manifest}: CSV needs 'path' and 'caption' columns, found {reader.fieldnames}")
            for n, row in enumerate(reader, start=2):
                add(_first(row, PATH_KEYS), _first(row, CAPTION_KEYS), f"line {n}")
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
                add(_first(rec, PATH_KEYS), _first(rec, CAPTION_KEYS), f"line {n}")
    return dict(out)


# A sidecar holds a few captions; more than this is not a caption file (only this much is read).
SIDECAR_MAX_BYTES = 64 << 10
_SIDECAR_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
                  | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0))


def sidecar_captions(image_path: str, may_follow: Callable[[str, str], bool] | None = None) -> list[str]:
    """Captions from ``photo.txt`` (or ``photo.jpg.txt``) beside ``photo.jpg``: one per non-empty line.

    A sidecar that is a symlink is read only where ``may_follow(link, target)`` allows (the
    indexer's LinkPolicy; None: never); one that is not a regular file (a FIFO, a device) is
    never read. Both are ignored with a warning. At most SIDECAR_MAX_BYTES are read.
    """
    for candidate in (os.path.splitext(image_path)[0] + ".txt", image_path + ".txt"):
        try:
            if os.path.islink(candidate):
                target = os.path.realpath(candidate)
                if may_follow is None or not may_follow(candidate, target):
                    log.warning("ignoring sidecar %s: a symlink to a file outside the indexed folders (%s)",
                                candidate, target)
                    continue
                candidate = target
            fd = os.open(candidate, _SIDECAR_FLAGS)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                log.warning("ignoring sidecar %s: not a regular file", candidate)
                continue
            data = f.read(SIDECAR_MAX_BYTES + 1)
        if len(data) > SIDECAR_MAX_BYTES:
            log.warning("sidecar %s is over %d KiB: only its start is read", candidate, SIDECAR_MAX_BYTES >> 10)
            data = data[:SIDECAR_MAX_BYTES]
        text = data.decode("utf-8", errors="replace")
        return [line.strip() for line in text.splitlines() if line.strip()]
    return []
