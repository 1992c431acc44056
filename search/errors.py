"""The one base of every error whose message is meant for the user.

A :class:`GlimpseError` carries how each front end reports it: the CLI exits
with ``exit_code`` after printing one line (glimpse/cli.py), the web answers
``http_status`` with the message (web/errors.py). Anything else that escapes
is a bug and keeps its traceback.
"""

from __future__ import annotations

# The CLI's exit codes (README): 0 ok, 1 error, 2 usage, 3 another job holds the lock, 130 interrupted.
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_INTERRUPTED = 130


class GlimpseError(Exception):
    """An error the user can act on; the message says what went wrong, without a traceback."""

    exit_code: int = EXIT_ERROR
    http_status: int = 400


class InvalidValue(GlimpseError, ValueError):
    """A value the user gave (an option, a query, a model name) that cannot be used.

    Also a ValueError, so code that validated with ``except ValueError`` keeps working.
    """


class EngineError(GlimpseError):
    """A query cannot be answered; the message is meant for the user."""


class NotIndexedError(EngineError):
    """Nothing is indexed yet: server state, not the client's fault (503: come back later)."""

    http_status = 503


class ImageUnavailable(EngineError):
    """No indexed image with this id, or its file is not the one that was indexed any more (a 404)."""

    http_status = 404
