"""search.settings: every GLIMPSE_* setting parsed, defaulted and checked in one place."""

from __future__ import annotations

import pytest

from search import settings as registry
from search.settings import SETTINGS, SettingError, from_env, settings


def test_defaults_when_nothing_is_set():
    values = from_env({})
    assert values["GLIMPSE_MAX_UPLOAD_MB"] == 20.0
    assert values["GLIMPSE_MAX_IMAGE_PIXELS"] == 179_000_000
    assert values["GLIMPSE_FLAT_MAX"] == 100_000
    assert values["GLIMPSE_INDEX_MMAP"] is True
    assert values["GLIMPSE_ALLOW_IMAGE_URL"] is False
    assert values["GLIMPSE_RUNTIME"] == "auto"
    assert values["GLIMPSE_QUANTIZE"] is None
    assert values["GLIMPSE_THREADS"] is None
    assert values["GLIMPSE_HOME"] == "~/.glimpse"
    assert set(values) == {s.name for s in SETTINGS}


def test_empty_means_unset():
    assert from_env({"GLIMPSE_MAX_FILE_MB": "", "GLIMPSE_RUNTIME": "  "}) == from_env({})


@pytest.mark.parametrize(
    "name, raw, value",
    [
        ("GLIMPSE_MAX_UPLOAD_MB", "0.5", 0.5),
        ("GLIMPSE_MAX_UPLOAD_PIXELS", "5e7", 50_000_000),  # int(float(…)) as before
        ("GLIMPSE_ALLOW_IMAGE_URL", "Yes", True),
        ("GLIMPSE_INDEX_MMAP", "0", False),
        ("GLIMPSE_ALLOWED_HOSTS", " a.example, b.example ,", ["a.example", "b.example"]),
        ("GLIMPSE_CORS_ORIGINS", "*", ["*"]),
        ("GLIMPSE_RUNTIME", "TORCH", "torch"),
        ("GLIMPSE_QUANTIZE", "int8", "int8"),
        ("GLIMPSE_DECODE", "gpu", "gpu"),
        ("GLIMPSE_PROGRESS_EVERY", "0", 0.0),
        ("GLIMPSE_FLAT_MAX", "40", 40),
        ("GLIMPSE_DECODE_NICE", "10", 10),
    ],
)
def test_values_are_parsed(name, raw, value):
    assert from_env({name: raw})[name] == value


@pytest.mark.parametrize(
    "name, raw, expects",
    [
        ("GLIMPSE_MAX_UPLOAD_MB", "abc", "a number of MiB > 0"),
        ("GLIMPSE_MAX_UPLOAD_MB", "0", "a number of MiB > 0"),
        ("GLIMPSE_DECODE_BUDGET_MB", "inf", "a number of MiB > 0"),
        ("GLIMPSE_QUERY_THREADS", "1.5", "a whole number >= 1"),
        ("GLIMPSE_THREADS", "0", "a whole number >= 1"),
        ("GLIMPSE_DECODE_NICE", "20", "a whole number from 0 to 19"),
        ("GLIMPSE_ALLOW_IMAGE_URL", "maybe", "on or off"),
        ("GLIMPSE_RUNTIME", "tensorrt", "auto, onnx or torch"),
        ("GLIMPSE_QUANTIZE", "int4", "int8"),
    ],
)
def test_a_bad_value_names_the_setting_and_what_it_expects(name, raw, expects):
    with pytest.raises(SettingError) as caught:
        from_env({name: raw})
    assert str(caught.value).startswith(f"{name}={raw!r} is not valid: expected ")
    assert expects in str(caught.value)
    assert caught.value.exit_code == 2


def test_settings_are_cached_until_a_declared_variable_changes(monkeypatch):
    monkeypatch.delenv("GLIMPSE_FLAT_MAX", raising=False)
    first = settings()
    assert settings() is first  # parsed once
    monkeypatch.setenv("GLIMPSE_UNRELATED_NAME", "x")  # not declared: no new parse
    assert settings() is first
    monkeypatch.setenv("GLIMPSE_FLAT_MAX", "7")
    assert settings()["GLIMPSE_FLAT_MAX"] == 7  # a test's setenv is seen without a reload
    assert registry.reload() is not first


def test_paths_and_cache_dir_come_from_the_registry(monkeypatch, tmp_path):
    from search.paths import Paths, cache_dir

    monkeypatch.setenv("GLIMPSE_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("GLIMPSE_CACHE_DIR", str(tmp_path / "c"))
    assert Paths.resolve().home == (tmp_path / "h").resolve()
    assert Paths.resolve(tmp_path / "other").home == (tmp_path / "other").resolve()  # --home wins
    assert cache_dir() == str(tmp_path / "c")


def test_web_config_is_a_view_over_the_registry():
    from web.config import SERVER_SETTINGS
    from web.config import from_env as web_from_env

    assert set(SERVER_SETTINGS) <= set(registry.BY_NAME)
    config = web_from_env({"GLIMPSE_ALLOWED_HOSTS": "x.example"})
    assert config["GLIMPSE_ALLOWED_HOSTS"] == ["x.example"] and config["GLIMPSE_MAX_UPLOAD_MB"] == 20.0
    with pytest.raises(SettingError):
        web_from_env({"GLIMPSE_MAX_UPLOAD_MB": "abc"})


def test_create_app_refuses_a_bad_setting_and_keeps_overrides(monkeypatch, tmp_path):
    from web.app import create_app

    class FakeEngine:  # create_app only needs .paths for the users file
        paths = type("P", (), {"home": tmp_path})()

    monkeypatch.setattr("web.app.Engine", FakeEngine)
    monkeypatch.setattr("web.metrics.init_app", lambda app, engine: None)
    monkeypatch.setenv("GLIMPSE_MAX_UPLOAD_MB", "abc")
    with pytest.raises(SettingError, match="GLIMPSE_MAX_UPLOAD_MB"):
        create_app(FakeEngine())
    monkeypatch.setenv("GLIMPSE_MAX_UPLOAD_MB", "2")
    app = create_app(FakeEngine(), config={"GLIMPSE_ALLOW_IMAGE_URL": True})
    assert app.config["GLIMPSE_MAX_UPLOAD_MB"] == 2.0 and app.config["GLIMPSE_ALLOW_IMAGE_URL"] is True


def test_cli_exits_2_naming_a_bad_setting(tmp_path):
    from click.testing import CliRunner

    from glimpse.cli import cli

    result = CliRunner().invoke(cli, ["stats"], env={"GLIMPSE_HOME": str(tmp_path), "GLIMPSE_MAX_UPLOAD_MB": "abc"})
    assert result.exit_code == 2
    assert "error: GLIMPSE_MAX_UPLOAD_MB='abc' is not valid: expected a number of MiB > 0" in result.output
    assert "Traceback" not in result.output
