"""One error shape for machines (JSON ``{"error": …}``) and a readable page for people.

Engine and decode errors carry user-facing messages already; here they get
their HTTP status. Which shape a request gets depends on its path, so an API
client never has to parse an HTML error page.
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from search.engine import EngineError, ImageUnavailable, NotIndexedError
from search.images import ImageDecodeError

log = logging.getLogger(__name__)

JSON_PREFIXES = ("/api/", "/fragments/", "/knn-service", "/indices-list", "/metadata")


class HttpError(Exception):
    """Abort a request with a status and a message meant for the user."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


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
    @app.errorhandler(HttpError)
    def _http_error(exc: HttpError):
        return error_response(exc.status, exc.message)

    @app.errorhandler(NotIndexedError)
    def _not_indexed(exc: NotIndexedError):
        # Server state, not the client's fault: 503 tells clients to come back later.
        return error_response(503, str(exc))

    @app.errorhandler(EngineError)
    def _engine_error(exc: EngineError):
        return error_response(400, str(exc))

    @app.errorhandler(ImageUnavailable)
    def _image_unavailable(exc: ImageUnavailable):
        return error_response(404, str(exc))

    @app.errorhandler(ImageDecodeError)
    def _decode_error(exc: ImageDecodeError):
        return error_response(400, f"cannot use this image: {exc}")

    @app.errorhandler(HTTPException)
    def _werkzeug(exc: HTTPException):
        if exc.code == 413:
            return error_response(413, "upload too large")
        return error_response(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal error; see the server log")
