"""search.query.kinds.parse_query: weights, negatives, and the filesystem only when the CLI allows files."""

from __future__ import annotations

import os

import pytest

from search.query.kinds import Term, parse_query


def terms(query: str, **kw) -> list[tuple[str, float, bool]]:
    return [(t.text, t.weight, t.is_image) for t in parse_query(query, **kw)]


def test_a_single_term_is_the_whole_text():
    assert parse_query("  a red bicycle ") == [Term("a red bicycle", 1.0, False)]


def test_weights_and_negatives():
    assert terms("2:beach + sunset - people") == [
        ("beach", 2.0, False),
        ("sunset", 1.0, False),
        ("people", -1.0, False),
    ]
    assert terms("0.5 : a - 3:b") == [("a", 0.5, False), ("b", -3.0, False)]
    assert terms("-2:night") == [("night", -2.0, False)]  # a negative weight is a weight


def test_a_leading_sign_applies_to_the_first_term():
    assert terms("- people + beach") == [("people", -1.0, False), ("beach", 1.0, False)]
    assert terms("+ beach") == [("beach", 1.0, False)]


def test_signs_split_only_between_spaces():
    assert terms("t-shirt + a+b") == [("t-shirt", 1.0, False), ("a+b", 1.0, False)]


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_empty_queries_are_refused(query):
    with pytest.raises(ValueError, match="empty query"):
        parse_query(query)


@pytest.mark.parametrize("query", ["99999999:x", "2:a + 1000001:b", "-2000000:x"])
def test_weights_beyond_the_cap_are_refused(query):
    with pytest.raises(ValueError, match="weight must be between"):
        parse_query(query)


def test_a_text_naming_an_existing_file_stays_text(tmp_path):
    image = tmp_path / "cat.png"
    image.write_bytes(b"not really a png; only its existence matters")
    assert terms(str(image)) == [(str(image), 1.0, False)]
    assert terms(f"{image} - dog") == [(str(image), 1.0, False), ("dog", -1.0, False)]


def test_allow_files_makes_a_file_term_an_image(tmp_path, monkeypatch):
    image = tmp_path / "cat.png"
    image.write_bytes(b"x")
    assert terms(f"{image} + 2:sunset", allow_files=True) == [(str(image), 1.0, True), ("sunset", 2.0, False)]
    monkeypatch.setenv("HOME", str(tmp_path))
    assert terms("~/cat.png", allow_files=True) == [("~/cat.png", 1.0, True)]  # the text as given
    assert terms(str(tmp_path), allow_files=True) == [(str(tmp_path), 1.0, False)]  # a folder is no image


def test_a_weight_like_file_name_keeps_its_colon_only_with_allow_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "2:beach").write_bytes(b"x")
    assert terms("2:beach") == [("beach", 2.0, False)]
    assert terms("2:beach", allow_files=True) == [("2:beach", 1.0, True)]


def test_without_allow_files_the_filesystem_is_never_asked(monkeypatch):
    def probe(*_a, **_kw):
        raise AssertionError("parse_query touched the filesystem")

    with monkeypatch.context() as m:
        for name in ("exists", "isfile", "isdir", "lexists"):
            m.setattr(os.path, name, probe)
        m.setattr(os, "stat", probe)
        got = terms("/etc/passwd + 2:~/photo.jpg - ./x")
    assert got == [("/etc/passwd", 1.0, False), ("~/photo.jpg", 2.0, False), ("./x", -1.0, False)]


def test_a_text_query_has_one_of_four_modes():
    from search.query.kinds import TextQuery

    assert TextQuery("x", mode="captions").mode == "captions"
    with pytest.raises(ValueError, match="mode must be"):
        TextQuery("x", mode="karaoke")  # type: ignore[arg-type]
