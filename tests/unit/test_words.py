"""How file and folder names split into keyword-index words (search.store.words), fast path and slow path alike."""

from __future__ import annotations

import pytest

from search.store.words import query_words, split_words


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("IMG_2041-redCar.jpg", ["img", "2041", "red", "car", "jpg"]),
        ("HTTPServer logs", ["http", "server", "logs"]),
        ("photos/2024/trip", ["photos", "2024", "trip"]),
        ("DSC", ["dsc"]),  # one case throughout: one word
        ("ABC猫", ["ab", "c猫"]),  # an uncased letter after capitals splits as after a capital run
        ("straße.JPG", ["straße", "jpg"]),
        ("ΣΟΦΙΑ_σοφία", ["σοφια", "σοφία"]),
        ("v2beta", ["v", "2", "beta"]),
        ("", []),
        ("__--..", []),
    ],
)
def test_names_split_the_way_people_read_them(text, words):
    assert split_words(text) == words


def test_a_query_looks_words_up_split_and_whole():
    # names are indexed split, captions as FTS5 tokenizes them (a run of letters and digits whole)
    assert query_words("TOP-SECRET-PASSWORD-hunter2") == ["top", "secret", "password", "hunter", "2", "hunter2"]
    assert query_words("redCar red") == ["red", "car", "redcar"]
    assert query_words("IMG_2041") == ["img", "2041"]  # "_" separates for the tokenizer too
