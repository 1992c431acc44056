"""Keyword queries over the FTS5 index, built so that no client text is ever FTS5 syntax.

A query's text terms are split into words (:func:`search.store.words.query_words`, which keeps letters and
digits only, in the forms names and captions are indexed in); each word becomes a quoted FTS5 string,
and the words are OR-ed, so ``NEAR(``, ``*``, ``^``, ``path:`` or a stray quote in a query are just the
words around them. bm25 ranks images with
more (and rarer) matching words first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from search.query.kinds import Term
from search.store.fts import MARK_END, MARK_START
from search.store.words import CJK_CHAR, query_words, word_spans

# Words a query contributes to its keyword search: enough for any real query, and a bound on the
# work a hostile one can ask for.
MAX_WORDS = 32


def match_expression(text: str) -> str | None:
    """The FTS5 query for a text: its words, each quoted, OR-ed; None when it has none."""
    words = query_words(text)[:MAX_WORDS]
    if not words:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


@dataclass(frozen=True)
class KeywordPlan:
    """What a text query asks of the keyword index: its positive terms (weighted) and its negative words."""

    positive: list[tuple[str, float]]  # (FTS5 query, weight), one per positive text term
    negative: str | None  # FTS5 query of every negative term's words

    @property
    def any_positive(self) -> str | None:
        """One query matching any positive word (for highlights)."""
        return " OR ".join(q for q, _ in self.positive) or None


def keyword_plan(terms: list[Term]) -> KeywordPlan:
    positive = [(m, t.weight) for t in terms if t.weight > 0 and not t.is_image if (m := match_expression(t.text))]
    negative = " ".join(t.text for t in terms if t.weight < 0 and not t.is_image)
    return KeywordPlan(positive, match_expression(negative))


def marked_spans(marked: str) -> tuple[str, list[list[int]]]:
    """``highlight()`` output → the plain text and the ``[start, end)`` spans of its marked words."""
    plain: list[str] = []
    spans: list[list[int]] = []
    pos, start = 0, None
    for ch in marked:
        if ch == MARK_START:
            start = pos
        elif ch == MARK_END:
            if start is not None:
                spans.append([start, pos])
            start = None
        else:
            plain.append(ch)
            pos += 1
    return "".join(plain), spans


def explain(path: str, name: str, folders: str, captions: str) -> tuple[str, list[list[int]]] | None:
    """The text to show for a keyword match, and its matched spans: the first caption line with a
    match, else the file name (spans mapped back onto the real name), else the folder words."""
    for line in captions.split("\n"):
        if MARK_START in line:
            return marked_spans(line)
    base = os.path.basename(path)
    if MARK_START in name:
        _, spans = marked_spans(name)
        words, name_spans = name.replace(MARK_START, "").replace(MARK_END, "").split(" "), word_spans(base)
        if len(words) != len(name_spans):  # not the name's words (cannot happen unless the splitter changed)
            return marked_spans(name)
        starts = [sum(len(w) + 1 for w in words[:i]) for i in range(len(words))]
        out = []
        for a, b in spans:
            inside = [i for i, st in enumerate(starts) if a <= st < b]
            if inside:
                out.append([name_spans[inside[0]][0], name_spans[inside[-1]][1]])
        return base, out
    if MARK_START in folders:
        return _cjk_joined(*marked_spans(folders))
    return None


def _cjk_joined(text: str, spans: list[list[int]]) -> tuple[str, list[list[int]]]:
    """Folder words as shown: the space between two CJK characters (each its own word) dropped, as the
    folder's name writes them, the spans moved with it."""
    drop = [
        i
        for i in range(1, len(text) - 1)
        if text[i] == " " and CJK_CHAR.match(text[i - 1]) and CJK_CHAR.match(text[i + 1])
    ]
    if not drop:
        return text, spans
    gone = set(drop)

    def moved(pos: int) -> int:
        return pos - sum(1 for d in drop if d < pos)

    return "".join(c for i, c in enumerate(text) if i not in gone), [[moved(a), moved(b)] for a, b in spans]
