"""Every GLIMPSE_* setting, declared once: name, default, help, how its value is read and checked.

Modelled on datasette's ``SETTINGS`` list. This module is the only one that reads
the environment for them: code asks ``settings()["GLIMPSE_HOME"]``; the README's
settings table is generated from :data:`SETTINGS` (``python -m search.settings
--markdown``, or ``--update-readme README.md``) and tests/unit/test_settings_docs.py
fails when the two differ. A bad value raises :class:`SettingError`, naming the
setting and what it expects (the CLI exits 2 with it; the server refuses to start).

A :class:`Settings` is an immutable mapping of every declared setting, built from
an environment plus explicit overrides (:meth:`Settings.from_env`). Each Engine and
each web app holds one, read when it is built, so a test can change a setting for
one of them without touching ``os.environ`` or reloading a module.

``settings()`` is the process default: parsed once and cached, keyed on the
declared variables' raw values, so a process whose environment does not change
(every real one) parses once, and a test's ``monkeypatch.setenv`` is seen without
an explicit :func:`reload`.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from search.errors import EXIT_USAGE, GlimpseError


class SettingError(GlimpseError):
    """A GLIMPSE_* variable whose value cannot be used (exit 2: the invocation is wrong, not the data)."""

    exit_code = EXIT_USAGE
    http_status = 500  # only a server started with a bad environment could meet it


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    # str -> value; raises ValueError when the text is not acceptable.
    parse: Callable[[str], Any] = str
    # What a valid value looks like, for the error message: "a whole number >= 1".
    expects: str = "text"
    # The README's Default column when ``default`` alone says too little (e.g. None).
    shown_default: str | None = None

    def read(self, raw: str | None) -> Any:
        """The value for the environment's ``raw`` text; empty or unset means the default."""
        if raw is None or not raw.strip():
            return self.default
        try:
            return self.parse(raw.strip())
        except ValueError:
            raise SettingError(f"{self.name}={raw!r} is not valid: expected {self.expects}") from None

    def default_text(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        if isinstance(self.default, float) and self.default.is_integer():
            return f"`{int(self.default)}`"
        return f"`{self.default}`"


def _whole(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        number = float(text)  # "5e7" is fine; "1.5" is not a whole number
        if not number.is_integer() or number < minimum or (maximum is not None and number > maximum):
            raise ValueError(text)
        return int(number)

    return parse


def _number(minimum: float, inclusive: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        number = float(text)
        if not math.isfinite(number) or number < minimum or (number == minimum and not inclusive):
            raise ValueError(text)
        return number

    return parse


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _flag(text: str) -> bool:
    lowered = text.lower()
    if lowered not in _TRUE | _FALSE:
        raise ValueError(text)
    return lowered in _TRUE


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.lower() not in options:
            raise ValueError(text)
        return text.lower()

    return parse


# GLIMPSE_OCR_LANG: RapidOCR's bundled multilingual model first, then the ones it downloads.
OCR_LANGS = ("ch", "korean", "cyrillic", "eslav", "arabic", "devanagari", "th", "el", "ta", "te")


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


WHOLE_1 = "a whole number >= 1"
FLAG = "on or off (1/0, true/false, yes/no)"

SETTINGS: list[Setting] = [
    # Where things live.
    Setting(
        "GLIMPSE_HOME",
        "~/.glimpse",
        "The data directory: database, index versions, thumbnails, logins (`--home` overrides it).",
    ),
    Setting(
        "GLIMPSE_CACHE_DIR", "~/.cache/glimpse", "Per-user cache of derived model files (ONNX exports of the encoders)."
    ),
    Setting(
        "GLIMPSE_USERS_FILE",
        None,
        "The logins file (`glimpse user` writes it, the server reads it); see [Login](#login).",
        shown_default="`$GLIMPSE_HOME/users`",
    ),
    # The server.
    Setting(
        "GLIMPSE_MAX_UPLOAD_MB",
        20.0,
        "Largest uploaded image (multipart or base64); larger is refused with 413.",
        _number(0, inclusive=False),
        "a number of MiB > 0",
    ),
    Setting(
        "GLIMPSE_MAX_UPLOAD_PIXELS",
        50_000_000,
        "Most pixels an uploaded image may have, read from its header before decoding; more is refused with 413.",
        _whole(1),
        WHOLE_1,
        shown_default="50000000",
    ),
    Setting(
        "GLIMPSE_ALLOW_IMAGE_URL",
        False,
        "Let clip-retrieval's `image_url` make the server download an image. Off: no server-side requests.",
        _flag,
        FLAG,
    ),
    Setting(
        "GLIMPSE_ALLOWED_HOSTS",
        None,
        "Comma-separated `Host` names accepted (DNS-rebinding guard). Set it when a reverse proxy serves "
        "Glimpse under another name.",
        _names,
        "comma-separated host names",
        shown_default="loopback names when bound to loopback, else any",
    ),
    Setting(
        "GLIMPSE_CORS_ORIGINS",
        (),
        "Comma-separated origins (or `*`) allowed to call the clip-retrieval endpoints from a browser, e.g. "
        "`https://rom1504.github.io` for its hosted front end.",
        _names,
        "comma-separated origins",
        shown_default="none",
    ),
    Setting(
        "GLIMPSE_TRUSTED_PROXIES",
        0,
        "How many reverse proxies in front of Glimpse to trust for `X-Forwarded-For` and `X-Forwarded-Proto`: "
        "the login's rate limit, logs and metrics then see the real client. Set it only when every request "
        "passes through that many proxies, each appending to the header; see "
        "[Behind a reverse proxy](#behind-a-reverse-proxy).",
        _whole(0, 10),
        "a whole number from 0 to 10",
        shown_default="0 (the header is not trusted)",
    ),
    # Decoding, everywhere.
    Setting(
        "GLIMPSE_MAX_IMAGE_PIXELS",
        179_000_000,
        "Decompression-bomb limit for every decode (uploads, thumbnails, indexing).",
        _whole(1),
        WHOLE_1,
        shown_default="179000000",
    ),
    Setting(
        "GLIMPSE_DECODE_BUDGET_MB",
        1024.0,
        "Memory for query and thumbnail decodes in flight at once (decoded size); a larger decode waits its "
        "turn, one larger than the budget runs alone.",
        _number(0, inclusive=False),
        "a number of MiB > 0",
    ),
    # Queries.
    Setting(
        "GLIMPSE_QUERY_THREADS",
        1,
        "FAISS threads per query (one is fastest for a single query vector on a small CPU; BENCHMARKS.md).",
        _whole(1),
        WHOLE_1,
    ),
    Setting(
        "GLIMPSE_QUERY_CACHE_ENTRIES",
        256,
        "Recent queries whose vector, filter ids and ranking are kept, so the next page redoes none of it (`0`: none).",
        _whole(0),
        "a whole number >= 0",
    ),
    Setting(
        "GLIMPSE_QUERY_CACHE_MB",
        64.0,
        "Memory those recent queries may hold.",
        _number(0, inclusive=False),
        "a number of MiB > 0",
    ),
    Setting(
        "GLIMPSE_DUPLICATES_NPROBE",
        4,
        "Inverted lists an IVF index searches per image when finding near-duplicates (at most the nprobe "
        "tuned for queries): near-duplicates share a list, so few suffice.",
        _whole(1),
        "a whole number >= 1",
    ),
    Setting(
        "GLIMPSE_DUPLICATES_MAX_DISTANCE",
        0.2,
        "Largest pixel-print distance (search/media/pixel_print.py: 0 same pixels, ~1 different pictures) at which "
        "a near-duplicate candidate is verified against its group's representative.",
        _number(0, inclusive=False),
        "a number > 0",
    ),
    Setting(
        "GLIMPSE_FILTER_EXACT_MAX",
        16000,
        "A folder or date filter keeping at most this many images is searched exactly over their stored "
        "vectors (fewer if those would take over half of GLIMPSE_QUERY_CACHE_MB); a larger one through the "
        "IVF index with an ID selector.",
        _whole(0),
        "a whole number >= 0",
    ),
    Setting(
        "GLIMPSE_INDEX_MMAP",
        True,
        "Memory-map the FAISS index on CPU instead of reading it into memory (`0` reads it whole).",
        _flag,
        FLAG,
    ),
    # Encoders.
    Setting(
        "GLIMPSE_RUNTIME",
        "auto",
        "Encoder runtime: `auto` (ONNX Runtime on CPU when the model exports, else torch), `onnx` or `torch`.",
        _choice("auto", "onnx", "torch"),
        "auto, onnx or torch",
    ),
    Setting(
        "GLIMPSE_QUANTIZE",
        None,
        "`int8`: an int8 image tower in ONNX Runtime on CPU (faster, cosine >= 0.98 to float32); same as "
        "`glimpse index --quantize int8`.",
        _choice("int8"),
        "int8 (or unset)",
        shown_default="none (float32)",
    ),
    Setting(
        "GLIMPSE_THREADS",
        None,
        "Threads of each ONNX Runtime session.",
        _whole(1),
        WHOLE_1,
        shown_default="the CPUs this process may use",
    ),
    # The indexer.
    Setting(
        "GLIMPSE_MAX_FILE_MB",
        512.0,
        "Largest file `glimpse index` reads; larger files are recorded as failed without being read or hashed.",
        _number(0, inclusive=False),
        "a number of MiB > 0",
    ),
    Setting(
        "GLIMPSE_FLAT_MAX",
        100_000,
        "Most vectors kept in an exact (flat) index; a larger collection gets an IVF index.",
        _whole(0),
        "a whole number >= 0",
    ),
    Setting(
        "GLIMPSE_PQ_MIN",
        2_000_000,
        "Fewest vectors given a compact IVF-PQ index (64 B per 512-d vector in memory, candidates re-ranked "
        "exactly against float16 vectors read from disk) instead of IVF-SQ8 (512 B per vector).",
        _whole(0),
        "a whole number >= 0",
    ),
    Setting(
        "GLIMPSE_DECODE",
        "auto",
        "Where `glimpse index` decodes JPEGs: `auto` (nvJPEG on the GPU when encoding on one), `gpu` or "
        "`cpu`; same as `--decode`.",
        _choice("auto", "gpu", "cpu"),
        "auto, gpu or cpu",
    ),
    Setting(
        "GLIMPSE_ENGINE",
        "local",
        "Where `glimpse index` embeds images: `local` (this machine) or `ray` (a Ray cluster, "
        '`pip install -e ".[ray]"`; README: Beyond one machine); same as `--engine`.',
        _choice("local", "ray"),
        "local or ray",
    ),
    Setting(
        "GLIMPSE_RAY_MIN_FILES",
        4000,
        "Fewest files to embed for which `--engine ray` without `--ray-address` (or `RAY_ADDRESS`) starts a "
        "private Ray cluster on this machine; a run with fewer embeds them here, without Ray, and logs why. "
        "Measured on 2 cores: the cluster's start costs 19-27 CPU-s per run and Ray's cost per image equals "
        "local's, so below ~4,000 images it only adds (BENCHMARKS.md). `0`: always Ray. A run joining a "
        "cluster uses it whatever the size.",
        _whole(0),
        "a whole number >= 0",
    ),
    Setting(
        "GLIMPSE_ENCODE_STREAMS",
        None,
        "Batches in flight in the encoder while indexing.",
        _whole(1),
        WHOLE_1,
        shown_default="GPU 3; CPU one per core, at most 4",
    ),
    Setting(
        "GLIMPSE_RAW_INFLIGHT_MB",
        None,
        "Memory for undecoded JPEG batches waiting for the GPU decoder; fewer workers start for big photos.",
        _whole(0),
        "a whole number of MiB >= 0",
        shown_default="a quarter of RAM, at most 8 GiB",
    ),
    Setting(
        "GLIMPSE_DECODE_NICE",
        0,
        "Niceness added to the indexer's decode worker processes (off by default: no faster on 2 cores).",
        _whole(0, 19),
        "a whole number from 0 to 19",
    ),
    Setting(
        "GLIMPSE_PROGRESS_EVERY",
        30.0,
        "Seconds between progress lines when `glimpse index`, `reindex` or `duplicates` is not on a terminal "
        "(cron, journald).",
        _number(0, inclusive=True),
        "a number of seconds >= 0",
    ),
    # Text inside images (OCR).
    Setting(
        "GLIMPSE_OCR",
        True,
        "Read the text inside images after each `glimpse index`/`reindex` (RapidOCR), so that a word in a "
        "screenshot, sign or label finds it; `--ocr`/`--no-ocr` override it for one run.",
        _flag,
        FLAG,
    ),
    Setting(
        "GLIMPSE_OCR_LANG",
        "ch",
        "The text reader's recognition model: `ch`, the bundled one (PP-OCRv6: Chinese, Japanese, English "
        "and the Latin-script languages), or one RapidOCR downloads on first use (PP-OCRv5): `korean`, "
        "`cyrillic`, `eslav`, `arabic`, `devanagari`, `th`, `el`, `ta`, `te`. Another one reads every "
        "image again on the next run.",
        _choice(*OCR_LANGS),
        "one of " + ", ".join(OCR_LANGS),
    ),
    Setting(
        "GLIMPSE_OCR_TIMEOUT",
        60.0,
        "Seconds the text reader may spend on one image; past it the image is left unread (a warning in "
        "the job record, not a failed image).",
        _number(0, inclusive=False),
        "a number of seconds > 0",
    ),
    # Videos (issue 27): a video is one row, its chosen frames are embedded like images.
    Setting(
        "GLIMPSE_VIDEO",
        True,
        "Index video files (.mp4 .mov .m4v .mkv .webm .avi .3gp) beside images: frames at scene changes "
        "and at least every GLIMPSE_VIDEO_FLOOR_S seconds are embedded, so a search finds the moment. "
        "Off: videos are counted and skipped (rows already indexed are kept).",
        _flag,
        FLAG,
    ),
    Setting(
        "GLIMPSE_VIDEO_FLOOR_S",
        10.0,
        "At least one frame of a video every this many seconds, scene change or not.",
        _number(0, inclusive=False),
        "a number of seconds > 0",
    ),
    Setting(
        "GLIMPSE_VIDEO_MIN_GAP_S",
        2.0,
        "Never two frames of a video closer than this many seconds (fast cuts keep the first).",
        _number(0, inclusive=False),
        "a number of seconds > 0",
    ),
    Setting(
        "GLIMPSE_VIDEO_MAX_FRAMES",
        300,
        "Most frames embedded per video; a longer video spreads them over its whole length.",
        _whole(1),
        WHOLE_1,
    ),
    Setting(
        "GLIMPSE_VIDEO_TIME_LIMIT_S",
        120.0,
        "Seconds the indexer may spend reading one video; past it the video is recorded as failed.",
        _number(0, inclusive=False),
        "a number of seconds > 0",
    ),
    Setting(
        "GLIMPSE_VIDEO_DEDUPE",
        0.95,
        "Cosine at or above which a video frame's embedding repeats the previous kept frame and is dropped "
        "(above 1: keep every chosen frame).",
        _number(0, inclusive=False),
        "a number > 0",
    ),
    Setting(
        "GLIMPSE_VIDEO_MAX_PIXELS",
        36_000_000,
        "Largest video frame (width x height) the indexer decodes; larger videos are recorded as failed "
        "before a frame is decoded (8K UHD, 33 MP, passes).",
        _whole(1),
        WHOLE_1,
    ),
    Setting(
        "GLIMPSE_MAX_VIDEO_MB",
        16384.0,
        "Largest video file `glimpse index` reads; larger ones are recorded as failed without being read.",
        _number(0, inclusive=False),
        "a number of MiB > 0",
    ),
]

BY_NAME: Mapping[str, Setting] = MappingProxyType({s.name: s for s in SETTINGS})


def _as_text(value: Any) -> str | None:
    """An override as the text the environment would hold: a list becomes comma-separated names,
    True/False on/off, None unset (the declared default)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(str(v) for v in value)
    return str(value)


class Settings(Mapping[str, Any]):
    """Every declared setting's value, checked, and immutable.

    Build one with :meth:`from_env`; :meth:`replace` gives a copy with some values changed. An override is
    checked exactly as the environment's text would be (``2`` or ``"2"`` for a number, a list or a
    comma-separated text for names, ``None`` for the default), so a bad one raises SettingError too.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]):
        missing = set(BY_NAME) - set(values)
        unknown = set(values) - set(BY_NAME)
        if missing or unknown:
            raise SettingError(f"not the declared settings: missing {sorted(missing)}, unknown {sorted(unknown)}")
        self._values: Mapping[str, Any] = MappingProxyType(dict(values))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
        """The settings in ``environ`` (default: os.environ), then ``overrides`` by name; SettingError names
        the first bad value or an unknown name."""
        env = os.environ if environ is None else environ
        raw: dict[str, str | None] = {s.name: env.get(s.name) for s in SETTINGS}
        raw.update(_checked_overrides(overrides))
        return cls({s.name: s.read(raw[s.name]) for s in SETTINGS})

    def replace(self, overrides: Mapping[str, Any] | None = None, **more: Any) -> Settings:
        """A copy with ``overrides`` (and keyword overrides) applied, each checked like the environment's."""
        values = dict(self._values)
        for name, text in _checked_overrides({**(overrides or {}), **more}).items():
            values[name] = BY_NAME[name].read(text)
        return Settings(values)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        changed = {k: v for k, v in self._values.items() if v != BY_NAME[k].default}
        return f"Settings({changed!r})"


def _checked_overrides(overrides: Mapping[str, Any] | None) -> dict[str, str | None]:
    unknown = sorted(set(overrides or {}) - set(BY_NAME))
    if unknown:
        raise SettingError(f"unknown setting {unknown[0]!r}: declared settings are listed in search/settings.py")
    return {name: _as_text(value) for name, value in (overrides or {}).items()}


def from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Every setting's value from ``environ`` (default: os.environ); SettingError names the first bad one."""
    return Settings.from_env(environ)


_lock = threading.Lock()
_cached: tuple[tuple, Settings] | None = None


def settings() -> Settings:
    """The process's default settings: parsed once, again only when a declared variable changes."""
    global _cached
    key = tuple(os.environ.get(s.name) for s in SETTINGS)
    cached = _cached
    if cached is not None and cached[0] == key:
        return cached[1]
    values = Settings.from_env(os.environ)
    with _lock:
        _cached = (key, values)
    return values


def reload() -> Settings:
    """Forget the cached values and read the environment again."""
    global _cached
    with _lock:
        _cached = None
    return settings()


def markdown_table() -> str:
    """The README's settings table."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    rows += [f"| `{s.name}` | {s.default_text()} | {s.help} |" for s in SETTINGS]
    return "\n".join(rows) + "\n"


TABLE_START = "<!-- settings table: generated by `python -m search.settings --update-readme README.md` -->\n"
TABLE_END = "<!-- end of settings table -->\n"


def readme_table(readme_text: str) -> str:
    """The generated block of a README (between the markers)."""
    start = readme_text.index(TABLE_START) + len(TABLE_START)
    return readme_text[start : readme_text.index(TABLE_END, start)]


def update_readme(path: str) -> bool:
    """Rewrite the table in ``path``; True when it changed."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    start = text.index(TABLE_START) + len(TABLE_START)
    new = text[:start] + markdown_table() + text[text.index(TABLE_END, start) :]
    if new != text:
        with open(path, "w", encoding="utf-8") as f:
            f.write(new)
    return new != text


def main(argv: list[str]) -> int:
    if argv == ["--markdown"]:
        sys.stdout.write(markdown_table())
        return 0
    if len(argv) == 2 and argv[0] == "--update-readme":
        print(f"{argv[1]}: {'updated' if update_readme(argv[1]) else 'already up to date'}")
        return 0
    if argv == ["--check"]:
        try:
            from_env()
        except SettingError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
        return 0
    print("usage: python -m search.settings --markdown | --update-readme README.md | --check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
