"""A matched caption or file name as HTML with its matched words in ``<mark>``.

The text is a client's or a file system's (hostile): each piece is escaped first, and only then are
the ``<mark>`` tags put around the matched pieces; spans that do not fit the text are ignored.
"""

from __future__ import annotations

from markupsafe import Markup, escape


def highlight(text: str | None, spans: list[list[int]] | None) -> Markup:
    text = text or ""
    out: list[str] = []
    pos = 0
    for span in sorted(spans or []):
        if len(span) != 2:
            continue
        a, b = span
        if not (pos <= a < b <= len(text)):
            continue
        out.append(str(escape(text[pos:a])))
        out.append("<mark>" + str(escape(text[a:b])) + "</mark>")
        pos = b
    out.append(str(escape(text[pos:])))
    return Markup("".join(out))
