"""One error shape for machines (JSON ``{"error": …}``) and a readable page for people.

Every user-facing error is a :class:`search.errors.GlimpseError` carrying its
message and its HTTP status; one handler answers them all. Which shape a request gets depends on its path, so an API
client never has to parse an HTML error page.
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from search.errors import GlimpseError
from search.media.decode import ImageDecodeError

log = logging.getLogger(__name__)

JSON_PREFIXES = ("/api/", "/fragments/", "/knn-service", "/indices-list", "/metadata")


class HttpError(GlimpseError):
    """Abort a request with a status and a message meant for the user."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = self.http_status = status
        self.message = message


def page_error(exc: HttpError | GlimpseError) -> tuple[str, int]:
    """The message and status a page shows in place for a request it cannot answer: an HttpError's own,
    else the error's ``http_status`` (a bad value 400, nothing indexed 503)."""
    if isinstance(exc, HttpError):
        return exc.message, exc.status
    return str(exc), exc.http_status


def wants_json() -> bool:
    return request.path.startswith(JSON_PREFIXES)


def error_response(status: int, message: str):
    if 400 <= status < 500:
        # A client's mistake is one line in the log (no traceback); %r keeps a hostile path on one line.
        log.info("%s %r -> %d: %s", request.method, request.path, status, message)
    if wants_json():
        return jsonify(error=message), status
    return render_template("error.html", status=status, message=message), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(GlimpseError)
    def _glimpse_error(exc: GlimpseError):
        if exc.http_status >= 500 and exc.http_status != 503:
            # The server's own fault (its model, its settings): the message is for the operator's log.
            log.error("%s %s: %s", request.method, request.path, exc)
            return error_response(500, "internal error; see the server log")
        message = f"cannot use this image: {exc}" if isinstance(exc, ImageDecodeError) else str(exc)
        return error_response(exc.http_status, message)

    @app.errorhandler(HTTPException)
    def _werkzeug(exc: HTTPException):
        if exc.code == 413:
            return error_response(413, "upload too large")
        return error_response(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal error; see the server log")
