"""What the CLI prints of text from disk: nothing a terminal would obey.

Human output goes through :func:`search.media.files.shown` (control characters escaped). JSON output stays
the exact values: ``json.dumps`` writes C0 controls as ``\\u`` escapes already, and :func:`json_text`
writes DEL and C1 the same way (left raw by ``ensure_ascii=False``, and C1 is an escape to some terminals).
"""

from __future__ import annotations

import json
import re

# DEL and C1: inside JSON they can only be in a string, where \u00XX is the same character
_DEL_C1 = re.compile("[\x7f-\x9f]")


def json_text(value: object) -> str:
    """``value`` as indented JSON (non-ASCII text as it is), with no raw control character in it."""
    return _DEL_C1.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(value, indent=2, ensure_ascii=False))
