"""Read captions: JSONL / CSV manifests and sidecar ``NAME.txt`` files.

Manifest shapes (what COCO / Flickr30k-style datasets are usually turned into):
JSONL lines ``{"path": ..., "caption": ...}`` or ``{"path": ..., "captions": [...]}``,
or CSV with ``path`` and ``caption`` columns. Several rows per image are allowed.
Relative paths resolve against the manifest's folder.

A bad row (invalid JSON, not an object, no path, a caption that is not text, an
empty caption) is skipped and reported with its file:line; the rest is read. Only
a manifest that cannot be read at all raises :class:`ManifestError`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import stat
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from search.errors import GlimpseError

log = logging.getLogger(__name__)


class ManifestError(GlimpseError):
    """A caption manifest that cannot be read; the message names the file and the problem."""


# Names converted datasets commonly use besides the documented "path" / "caption".
PATH_KEYS = ("path", "image", "image_path", "filepath", "file_name", "filename", "file")
CAPTION_KEYS = ("captions", "caption", "text", "title")

# Longer captions are cut: every search result carries its caption, and the text tower reads
# only the first few dozen tokens anyway.
MAX_CAPTION_CHARS = 2000


def cap_caption(text: str) -> str:
    """``text`` cut to :data:`MAX_CAPTION_CHARS` (the one place captions are capped)."""
    return text[:MAX_CAPTION_CHARS]


def _first(rec: dict, keys: tuple[str, ...]):
    return next((rec[k] for k in keys if rec.get(k) not in (None, "")), None)


def _row_captions(rec: dict) -> tuple[list[str], str | None]:
    """The captions of one row, or ``([], why the row is skipped)``."""
    value = _first(rec, CAPTION_KEYS)
    if value is None:
        given = [k for k in CAPTION_KEYS if k in rec]
        return [], "empty caption" if given else "no caption (expected 'caption' or 'captions')"
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else None
    if items is None or not all(isinstance(c, str) for c in items):
        return [], f"caption is not text or a list of texts (got {_kind(value)})"
    captions = [c.strip() for c in items if c.strip()]
    return captions, None if captions else "empty caption"


def _kind(value) -> str:
    if isinstance(value, list):
        return "a list holding " + ", ".join(sorted({_kind(v) for v in value if not isinstance(v, str)}))
    return {bool: "true/false", int: "a number", float: "a number", dict: "an object"}.get(
        type(value), type(value).__name__
    )


def _lines(manifest: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file, a byte-order mark dropped; undecodable bytes fail the file."""
    try:
        f = open(manifest, "rb")
    except OSError as exc:
        raise ManifestError(f"cannot read caption file {manifest}: {exc.strerror or exc}") from None
    with f:
        for n, raw in enumerate(f, start=1):
            try:
                yield n, raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError:
                raise ManifestError(f"{manifest}:{n}: not UTF-8 text; save the caption file as UTF-8") from None


@dataclass
class ManifestRow:
    """One usable manifest row: its line, the image it names and its captions."""

    line: int
    path: str  # absolute, resolved as read_manifest documents
    captions: list[str]  # non-empty, stripped, in row order
    record: dict  # the row as read (JSON object or CSV row), for readers that want more keys


@dataclass
class ManifestCaptions:
    """A manifest's captions by image, and where each image is first named (for rows naming no image)."""

    file: str
    captions: dict[str, list[str]]  # absolute image path -> captions, in file order, no repeats
    lines: dict[str, int]  # absolute image path -> the first line naming it

    def row_of(self, path: str) -> str:
        """``FILE:LINE`` of the first row naming ``path``: how every bad row is reported."""
        return f"{self.file}:{self.lines[path]}"


def load_manifest(
    manifest: str | os.PathLike, search_dirs: Sequence[str] = (), warn: Callable[[str], None] | None = None
) -> ManifestCaptions:
    """The captions of ``manifest``, by absolute image path.

    Relative paths resolve against the manifest's folder; when no file is there,
    against each of ``search_dirs`` (the folders being indexed). Each skipped row
    is passed to ``warn`` as one line ``FILE:LINE: skipped: WHY`` (default: logged).
    """
    out: dict[str, list[str]] = defaultdict(list)
    lines: dict[str, int] = {}
    for row in manifest_rows(manifest, search_dirs, warn):
        lines.setdefault(row.path, row.line)
        for c in row.captions:
            if c not in out[row.path]:
                out[row.path].append(c)
    return ManifestCaptions(str(manifest), dict(out), lines)


def read_manifest(
    manifest: str | os.PathLike, search_dirs: Sequence[str] = (), warn: Callable[[str], None] | None = None
) -> dict[str, list[str]]:
    """Absolute image path -> captions (in file order, duplicates removed): :func:`load_manifest`'s."""
    return load_manifest(manifest, search_dirs, warn).captions


def manifest_rows(
    manifest: str | os.PathLike, search_dirs: Sequence[str] = (), warn: Callable[[str], None] | None = None
) -> Iterator[ManifestRow]:
    """The usable rows of a manifest in file order (the one parser of caption manifests:
    ``read_manifest`` and training's reader both go through it); bad rows go to ``warn``."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ManifestError(f"caption file not found: {manifest}")
    warn = warn or log.warning
    bases = [str(manifest.resolve().parent), *[os.path.abspath(d) for d in search_dirs]]

    def resolve(path: str) -> str:
        path = os.path.expanduser(path)
        candidates = [os.path.normpath(os.path.join(b, path)) for b in bases]
        return next((c for c in candidates if os.path.isfile(c)), candidates[0])

    def checked(rec: dict, line: int) -> ManifestRow | None:
        path = _first(rec, PATH_KEYS)
        why = None
        if path is None:
            why = "no path (expected 'path')"
        elif not isinstance(path, str):
            why = f"path is not text (got {_kind(path)})"
        elif "\0" in path:
            why = "path holds a NUL character"
        captions, caption_problem = _row_captions(rec)
        why = why or caption_problem
        if why:
            warn(f"{manifest}:{line}: skipped: {why}")
            return None
        return ManifestRow(line, resolve(path), captions, rec)

    if manifest.suffix.lower() == ".csv":
        lines = _lines(manifest)
        reader = csv.DictReader((text for _, text in lines))
        try:
            fields = set(reader.fieldnames or [])
        except csv.Error as exc:
            raise ManifestError(f"{manifest}:1: not a CSV header ({exc})") from None
        if not fields & set(PATH_KEYS) or not fields & set(CAPTION_KEYS):
            raise ManifestError(f"{manifest}: CSV needs 'path' and 'caption' columns, found {reader.fieldnames}")
        end = reader.line_num  # a record starts on the line after the previous one ended
        while True:
            start = end + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:  # e.g. a field over the csv module's size limit
                warn(f"{manifest}:{start}: skipped: {exc}")
                end = max(reader.line_num, start)
                continue
            end = reader.line_num
            if (usable := checked(row, start)) is not None:
                yield usable
    else:
        for n, line in _lines(manifest):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                why = (
                    f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
                )
                warn(f"{manifest}:{n}: skipped: not valid JSON ({why})")
                continue
            if not isinstance(rec, dict):
                warn(f"{manifest}:{n}: skipped: expected an object with 'path' and 'caption'")
                continue
            if (usable := checked(rec, n)) is not None:
                yield usable


# A sidecar holds a few captions; more than this is not a caption file (only this much is read).
SIDECAR_MAX_BYTES = 64 << 10
_SIDECAR_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOCTTY", 0)
)


def sidecar_names(image_name: str) -> tuple[str, str]:
    """The names a sidecar of ``image_name`` may have, in the order they are tried: ``photo.txt``, ``photo.jpg.txt``."""
    return os.path.splitext(image_name)[0] + ".txt", image_name + ".txt"


def sidecar_captions(image_path: str, may_follow: Callable[[str, str], bool] | None = None) -> list[str]:
    """Captions from ``photo.txt`` (or ``photo.jpg.txt``) beside ``photo.jpg``: one per non-empty line.

    A sidecar that is a symlink is read only where ``may_follow(link, target)`` allows (the
    indexer's LinkPolicy; None: never); one that is not a regular file (a FIFO, a device) is
    never read. Both are ignored with a warning. At most SIDECAR_MAX_BYTES are read.
    """
    folder, name = os.path.split(image_path)
    for candidate in (os.path.join(folder, n) for n in sidecar_names(name)):
        try:
            if os.path.islink(candidate):
                target = os.path.realpath(candidate)
                if may_follow is None or not may_follow(candidate, target):
                    log.warning(
                        "ignoring sidecar %s: a symlink to a file outside the indexed folders (%s)", candidate, target
                    )
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
