"""Words for the keyword index: file and folder names split the way people read them.

``"IMG_2041-redCar.jpg"`` → ``img 2041 red car jpg``: separators, camelCase and letter/digit
boundaries all split. Captions are indexed as written (highlights show the caption itself), so
FTS5's tokenizer (unicode61) keeps each run of letters and digits one word there: ``hunter2``,
``redcar``. A query asks for both forms (:func:`query_words`), so a word of a name, a folder or
a caption is found by typing it as it is written.

Chinese and Japanese (and Korean, within its words) write words without spaces, so a run of their
characters would be one token and a word inside it would never match: each such character is a word of
its own in names and folders, and in captions and the text read in images :func:`separate_cjk` puts
``SEP`` around it; a query word holding them is a phrase of its characters (:func:`query_words`):
"東京" matches "東京タワー", not "京…東".
"""

from __future__ import annotations

import re

_CHUNKS = re.compile(r"[^\W_]+")  # runs of letters and digits: every other character separates
# INVISIBLE SEPARATOR: a separator to unicode61 (category Cf), never shown (search.store.fts.shown_text)
SEP = "\u2063"
_CJK = (
    "[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\uac00-\ud7af\U00020000-\U0002fa1f]"
)
CJK_CHAR = re.compile(_CJK)
_PARTS = re.compile(f"{_CJK}|(?:(?!{_CJK})[^\\W_])+")  # a CJK character, or a run of other letters and digits


def separate_cjk(text: str) -> str:
    """``text`` as the index holds it: each CJK character one token (``SEP`` around it)."""
    return CJK_CHAR.sub(lambda m: SEP + m.group() + SEP, text.replace(SEP, ""))


def phrase(word: str) -> str:
    """A word holding CJK characters as the FTS5 phrase of its characters (and of the runs beside them):
    ``kx447東京`` → ``kx447 東 京``, to be quoted."""
    return " ".join(_PARTS.findall(word))


def _kind(ch: str) -> int:
    return 0 if ch.isdigit() else 1 if ch.isupper() else 2


def word_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each word of ``text``, in order (the words are ``text[start:end]``)."""
    spans: list[tuple[int, int]] = []
    for m in _PARTS.finditer(text):  # a CJK character is a word of its own
        chunk, base, start = m.group(), m.start(), 0
        if chunk.isdigit() or (chunk.isalpha() and (chunk.islower() or (chunk.isascii() and chunk.isupper()))):
            spans.append((base, base + len(chunk)))  # one kind throughout: no boundary inside (most words)
            continue
        for i in range(1, len(chunk)):
            prev, cur = _kind(chunk[i - 1]), _kind(chunk[i])
            nxt = _kind(chunk[i + 1]) if i + 1 < len(chunk) else None
            if (
                (prev == 0) != (cur == 0)  # letters ↔ digits
                or (prev == 2 and cur == 1)  # redCar
                or (prev == 1 and cur == 1 and nxt == 2)  # HTTPServer: HTTP | Server
            ):
                spans.append((base + start, base + i))
                start = i
        spans.append((base + start, base + len(chunk)))
    return spans


def split_words(text: str) -> list[str]:
    """The lower-cased words of ``text`` (file names, folder names, query text)."""
    return [text[a:b].lower() for a, b in word_spans(text)]


def query_words(text: str) -> list[str]:
    """The words a query looks up, lower-cased, without repeats: each word as names are split
    (``hunter``, ``2``) and, where that split a run of letters and digits, the run whole (``hunter2``),
    which is how a caption holds it."""
    out: list[str] = []
    for m in _CHUNKS.finditer(text):
        if CJK_CHAR.search(m.group()):  # one phrase: its characters side by side
            out.append(phrase(m.group().lower()))
            continue
        parts = split_words(m.group())
        out.extend(parts)
        if len(parts) > 1:
            out.append(m.group().lower())
    return list(dict.fromkeys(out))
