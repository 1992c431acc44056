"""One error base: each user-facing error's exit code and HTTP status, mapped in one place per front end."""

from __future__ import annotations

import pytest
from flask import Flask

from indexer.captions import ManifestError
from indexer.disk import DiskFull
from indexer.load import DecodeWorkerDied
from indexer.lock import LockHeld
from indexer.pipeline import ModelMismatch
from search.encoders.model_spec import ModelLoadError
from search.engine import EngineError, ImageUnavailable, NotIndexedError
from search.errors import InvalidValue
from search.media.decode import ImageDecodeError, ImageTooLarge
from search.settings import SettingError
from web.errors import HttpError, register_error_handlers
from web.users import UsersError

# Each user-facing error and what a person sees: the CLI's exit code, the HTTP status.
CASES = [
    (EngineError("x"), 1, 400),
    (NotIndexedError("x"), 1, 503),
    (ImageUnavailable("x"), 1, 404),
    (ImageDecodeError("x"), 1, 400),
    (ImageTooLarge("x"), 1, 400),
    (ModelLoadError("x"), 1, 500),
    (ManifestError("x"), 1, 400),
    (LockHeld("x"), 3, 400),
    (DiskFull("/tmp", "testing"), 1, 400),
    (DecodeWorkerDied("x"), 1, 400),
    (ModelMismatch("x"), 1, 400),
    (SettingError("x"), 2, 500),
    (InvalidValue("x"), 1, 400),
    (UsersError("x"), 1, 400),
    (HttpError(413, "x"), 1, 413),
]
IDS = [type(error).__name__ for error, _, _ in CASES]


@pytest.mark.parametrize("error, exit_code, http_status", CASES, ids=IDS)
def test_the_cli_exits_with_each_error_s_code_in_one_line(monkeypatch, tmp_path, error, exit_code, http_status):
    result = _invoke(monkeypatch, tmp_path, error)
    assert result.exit_code == exit_code
    assert result.output == f"error: {error}\n" and "Traceback" not in result.output


@pytest.mark.parametrize("error, exit_code, http_status", CASES, ids=IDS)
def test_http_answers_each_error_with_its_status(error, exit_code, http_status):
    app = Flask(__name__)
    register_error_handlers(app)

    @app.route("/api/raise")
    def _raise():
        raise error

    response = app.test_client().get("/api/raise")
    assert response.status_code == http_status and "error" in response.get_json()


def test_compatible_bases_are_kept():
    assert issubclass(DecodeWorkerDied, RuntimeError)  # code that caught RuntimeError still does
    assert issubclass(InvalidValue, ValueError)


@pytest.fixture
def client():
    app = Flask(__name__)
    register_error_handlers(app)
    raised = {
        "engine": EngineError("empty query"),
        "not-indexed": NotIndexedError("nothing is indexed yet"),
        "gone": ImageUnavailable("no image with id 7"),
        "decode": ImageDecodeError("not an image"),
        "http": HttpError(403, "host 'evil' is not allowed"),
        "model": ModelLoadError("weights missing at /secret/path"),
    }

    @app.route("/api/raise/<name>")
    def _raise(name):
        raise raised[name]

    return app.test_client()


@pytest.mark.parametrize(
    "name, status, message",
    [
        ("engine", 400, "empty query"),
        ("not-indexed", 503, "nothing is indexed yet"),
        ("gone", 404, "no image with id 7"),
        ("decode", 400, "cannot use this image: not an image"),
        ("http", 403, "host 'evil' is not allowed"),
        ("model", 500, "internal error; see the server log"),  # the operator's problem: details go to the log
    ],
)
def test_web_answers_each_error_with_its_status_and_message(client, name, status, message):
    response = client.get(f"/api/raise/{name}")
    assert response.status_code == status
    assert response.get_json() == {"error": message}


def _invoke(monkeypatch, tmp_path, error):
    from click.testing import CliRunner

    import indexer.pipeline
    from glimpse.cli import cli

    def run_job(paths, roots, opts, **kw):
        raise error

    monkeypatch.setattr(indexer.pipeline, "run_job", run_job)
    (tmp_path / "pics").mkdir(exist_ok=True)
    return CliRunner().invoke(cli, ["--home", str(tmp_path / "home"), "index", str(tmp_path / "pics")])


def test_cli_reports_a_dead_decode_worker_in_one_line_exit_1(monkeypatch, tmp_path):
    result = _invoke(monkeypatch, tmp_path, DecodeWorkerDied("a decode worker process died (out of memory, or killed)"))
    assert result.exit_code == 1
    assert result.output == "error: a decode worker process died (out of memory, or killed)\n"
    assert "Traceback" not in result.output


def test_cli_still_reports_a_bug_as_a_bug(monkeypatch, tmp_path):
    result = _invoke(monkeypatch, tmp_path, KeyError("bug"))
    assert result.exit_code == 1 and isinstance(result.exception, KeyError)  # not swallowed into one line
