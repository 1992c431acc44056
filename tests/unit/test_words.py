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
        ("ABC猫", ["abc", "猫"]),  # a Chinese or Japanese character is a word of its own
        ("東京タワー_2024.jpg", ["東", "京", "タ", "ワ", "ー", "2024", "jpg"]),
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


def test_a_chinese_or_japanese_word_is_found_inside_a_caption_or_a_file_name(tmp_path):
    """Words written without spaces: a query word matches its characters side by side anywhere in a caption,
    a file name or a folder name, and the match is shown marked in the caption or name as written."""
    from search.query.keywords import explain, match_expression
    from search.store.database import Store
    from search.store.fts import MARK_END, MARK_START

    store = Store(tmp_path / "g.db")
    rows = [
        dict(path=p, size=1, mtime=0.0, status="indexed")
        for p in ("/photos/a.jpg", "/photos/東京タワー_夜.jpg", "/photos/北京/b.jpg", "/photos/c.jpg")
    ]
    with store.transaction() as s:
        store.write_images(s, rows)
    captions = {"/photos/a.jpg": [("東京の夜景とタワー", "manifest")], "/photos/c.jpg": [("京都", "manifest")]}
    assert store.add_captions(captions) == []
    with store.session() as s:
        ids = {p: i for p, i in s.execute(text_sql("SELECT path, id FROM images"))}

    def found(q: str) -> set[str]:
        match = match_expression(q)
        assert match is not None
        return {p for p, i in ids.items() if i in dict(store.keyword_ranking(match, 10))}

    assert found("東京") == {"/photos/a.jpg", "/photos/東京タワー_夜.jpg"}  # a caption, a file name
    assert found("タワー") == {"/photos/a.jpg", "/photos/東京タワー_夜.jpg"}
    assert found("北京") == {"/photos/北京/b.jpg"}  # a folder
    assert found("京東") == set() and found("夜京") == set()  # the characters, not side by side
    assert found("京都") == {"/photos/c.jpg"}
    marked = store.keyword_highlights(match_expression("タワー") or "", list(ids.values()))
    caption = marked[ids["/photos/a.jpg"]][2]
    assert caption == f"東京の夜景と{MARK_START}タワー{MARK_END}"  # shown as written
    shown = explain("/photos/東京タワー_夜.jpg", *marked[ids["/photos/東京タワー_夜.jpg"]])
    assert shown is not None and [shown[0][a:b] for a, b in shown[1]] == ["タワー"]
    folder = store.keyword_highlights(match_expression("北京") or "", [ids["/photos/北京/b.jpg"]])
    assert explain("/photos/北京/b.jpg", *folder[ids["/photos/北京/b.jpg"]]) == ("北京", [[0, 2]])  # as named
    store.close()


def text_sql(sql: str):
    from sqlalchemy import text

    return text(sql)
