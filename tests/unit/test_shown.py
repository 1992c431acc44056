"""search.media.files.shown: text from disk as people and terminals see it, and log lines through ShownLogArgs."""

from __future__ import annotations

import logging

import pytest

from search.media.files import ShownLogArgs, shown


@pytest.mark.parametrize(
    ("text", "seen"),
    [
        ("IMG_2041.jpg", "IMG_2041.jpg"),
        ("café.jpg", "café.jpg"),
        ("b\udcff.png", "b\\xff.png"),  # an undecodable byte, as os.fsdecode hands it over
        ("clip\x1b]52;c;QUJD\x07.png", "clip\\x1b]52;c;QUJD\\x07.png"),  # OSC 52 ended by BEL
        ("new\nline\t.png", "new\\x0aline\\x09.png"),
        ("del\x7f.png", "del\\x7f.png"),
        ("csi\u009b2J.png", "csi\\u009b2J.png"),  # C1: not \\x9b, which is the undecodable byte
    ],
)
def test_shown_escapes_what_a_terminal_would_obey(text, seen):
    assert shown(text) == seen
    assert shown(seen) == seen  # idempotent


def test_log_lines_show_their_arguments_and_tracebacks_escaped():
    record = logging.LogRecord("t", logging.WARNING, __file__, 1, "failed: %s: %d files", ("a\x1b[2J.png", 3), None)
    try:
        raise OSError("cannot read b\x07.png")
    except OSError:
        import sys

        record.exc_info = sys.exc_info()
    assert ShownLogArgs().filter(record)
    line = logging.Formatter("%(message)s").format(record)
    assert line.startswith("failed: a\\x1b[2J.png: 3 files\nTraceback")
    assert "b\\x07.png" in line and "\x07" not in line and "\x1b" not in line
