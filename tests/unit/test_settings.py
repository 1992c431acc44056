"""search.settings: every GLIMPSE_* setting parsed, defaulted and checked in one place."""

from __future__ import annotations

import io

import pytest

from search import settings as registry
from search.settings import SETTINGS, SettingError, Settings, from_env, settings


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


def test_a_settings_object_is_immutable_and_checks_its_overrides():
    conf = Settings.from_env({"GLIMPSE_FLAT_MAX": "5"}, overrides={"GLIMPSE_ALLOWED_HOSTS": ["x.example"]})
    assert conf["GLIMPSE_FLAT_MAX"] == 5 and conf["GLIMPSE_ALLOWED_HOSTS"] == ["x.example"]
    assert conf["GLIMPSE_MAX_UPLOAD_MB"] == 20.0 and set(conf) == set(registry.BY_NAME)
    with pytest.raises(TypeError):
        conf["GLIMPSE_FLAT_MAX"] = 6  # type: ignore[index]
    changed = conf.replace(GLIMPSE_MAX_UPLOAD_MB=2, GLIMPSE_ALLOW_IMAGE_URL=True)
    assert changed["GLIMPSE_MAX_UPLOAD_MB"] == 2.0 and changed["GLIMPSE_ALLOW_IMAGE_URL"] is True
    assert conf["GLIMPSE_MAX_UPLOAD_MB"] == 20.0  # the original is unchanged
    assert changed.replace(GLIMPSE_ALLOWED_HOSTS=None)["GLIMPSE_ALLOWED_HOSTS"] is None  # None: the default
    with pytest.raises(SettingError, match="GLIMPSE_MAX_UPLOAD_MB='-1' is not valid"):
        conf.replace(GLIMPSE_MAX_UPLOAD_MB=-1)  # an override is checked like the environment's text
    with pytest.raises(SettingError, match="unknown setting 'GLIMPSE_NO_SUCH'"):
        Settings.from_env({}, overrides={"GLIMPSE_NO_SUCH": 1})


def test_modules_read_settings_when_used_not_at_import(monkeypatch):
    """indexer/admit.py, indexer/pixels.py and search/media/decode.py follow a changed setting, no reload."""
    from indexer.admit import size_error
    from indexer.pixels import raw_batch_workers
    from search.media.decode import decode_budget, max_image_pixels

    monkeypatch.setenv("GLIMPSE_MAX_FILE_MB", "1")
    assert "over the 1 MB limit" in (size_error(2 << 20) or "")
    monkeypatch.setenv("GLIMPSE_MAX_FILE_MB", "3")
    assert size_error(2 << 20) is None
    monkeypatch.setenv("GLIMPSE_RAW_INFLIGHT_MB", "1")
    assert raw_batch_workers(15, 256, [1_000_000] * 4) == 1
    monkeypatch.setenv("GLIMPSE_MAX_IMAGE_PIXELS", "1000")
    monkeypatch.setenv("GLIMPSE_DECODE_BUDGET_MB", "3")
    assert max_image_pixels() == 1000 and decode_budget().capacity == 3 << 20
    assert max_image_pixels(Settings.from_env({})) == 179_000_000  # an object passed in wins


@pytest.fixture(autouse=True)
def _fake_engines_pass(monkeypatch):
    """create_app takes a FakeEngine below as an Engine; no metrics hooks."""
    monkeypatch.setattr("web.app.Engine", FakeEngineBase)


class FakeEngineBase:
    pass


def _fake_engine(tmp_path, conf=None):
    """create_app needs only ``.paths`` (the users file) and ``.settings``; searching says nothing is indexed."""
    from search.errors import NotIndexedError

    class FakeEngine(FakeEngineBase):
        paths = type("P", (), {"home": tmp_path})()
        settings = conf

        def search(self, *a, **k):
            raise NotIndexedError("no published index yet")

    return FakeEngine()


def test_a_setting_changed_for_one_app_leaves_the_others_alone(monkeypatch, tmp_path):
    """Two apps in one process: only the one built with a lower pixel limit refuses a 2000 x 2000 upload,
    without os.environ or a module reload. Before, the limit was frozen when search.media.decode was imported."""
    from bench.big_png import header_only_png
    from web.app import create_app

    strict = create_app(_fake_engine(tmp_path), config={"GLIMPSE_MAX_IMAGE_PIXELS": 1_000_000}).test_client()
    default = create_app(_fake_engine(tmp_path)).test_client()
    png = header_only_png(2000, 2000, "RGB")

    def upload(client):
        return client.post("/api/search/image", data={"image": (io.BytesIO(png), "big.png")})

    refused = upload(strict)
    assert refused.status_code == 413 and "(GLIMPSE_MAX_IMAGE_PIXELS)" in refused.get_json()["error"]
    assert upload(default).status_code == 503  # past the checks: the (fake) engine answers
    assert upload(strict).status_code == 413


def test_an_app_keeps_its_engine_settings_and_its_own_overrides(monkeypatch, tmp_path):
    from web.app import create_app
    from web.config import app_settings

    own = Settings.from_env({}, overrides={"GLIMPSE_MAX_UPLOAD_MB": 3})
    app = create_app(_fake_engine(tmp_path, own), config={"GLIMPSE_ALLOW_IMAGE_URL": True})
    conf = app_settings(app)
    assert conf["GLIMPSE_MAX_UPLOAD_MB"] == 3.0 and conf["GLIMPSE_ALLOW_IMAGE_URL"] is True
    assert "GLIMPSE_MAX_UPLOAD_MB" not in app.config  # no second copy in Flask's config
    with pytest.raises(SettingError, match="unknown setting"):
        create_app(_fake_engine(tmp_path), config={"GLIMPSE_TYPO": 1})


def test_the_app_sets_faiss_threads_an_engine_does_not(monkeypatch, tmp_path):
    """FAISS's OpenMP thread count is the process's: set where serving starts (the app), never by an Engine."""
    import faiss

    from search.engine import Engine
    from search.paths import Paths
    from web.app import create_app

    before = faiss.omp_get_max_threads()
    try:
        faiss.omp_set_num_threads(2)
        Engine(Paths.resolve(tmp_path / "home"), settings=Settings.from_env({})).close()
        assert faiss.omp_get_max_threads() == 2
        create_app(_fake_engine(tmp_path), config={"GLIMPSE_QUERY_THREADS": 1})
        assert faiss.omp_get_max_threads() == 1
    finally:
        faiss.omp_set_num_threads(before)


def test_create_app_refuses_a_bad_setting_and_keeps_overrides(monkeypatch, tmp_path):
    from web.app import create_app
    from web.config import app_settings

    monkeypatch.setenv("GLIMPSE_MAX_UPLOAD_MB", "abc")
    with pytest.raises(SettingError, match="GLIMPSE_MAX_UPLOAD_MB"):
        create_app(_fake_engine(tmp_path))
    monkeypatch.setenv("GLIMPSE_MAX_UPLOAD_MB", "2")
    app = create_app(_fake_engine(tmp_path), config={"GLIMPSE_ALLOW_IMAGE_URL": True})
    assert app_settings(app)["GLIMPSE_MAX_UPLOAD_MB"] == 2.0 and app_settings(app)["GLIMPSE_ALLOW_IMAGE_URL"] is True


def test_cli_exits_2_naming_a_bad_setting(tmp_path):
    from click.testing import CliRunner

    from glimpse.cli import cli

    result = CliRunner().invoke(cli, ["stats"], env={"GLIMPSE_HOME": str(tmp_path), "GLIMPSE_MAX_UPLOAD_MB": "abc"})
    assert result.exit_code == 2
    assert "error: GLIMPSE_MAX_UPLOAD_MB='abc' is not valid: expected a number of MiB > 0" in result.output
    assert "Traceback" not in result.output
