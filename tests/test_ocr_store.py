"""Issue 26: the stored text of images and its reads (search/store/ocr.py), on a real SQLite database.

Rows are written as the OCR stage writes them (``Store.set_ocr_results``); nothing here runs the reader
(tests/test_ocr_index.py does, through the real CLI).
"""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import update

from search.query.keywords import marked_spans
from search.store.database import Store
from search.store.ocr import MARK_END, MARK_START, OcrResult, TextLine, text_match
from search.store.schema import ImageRow

ENGINE = "rapidocr test"
BOX = (0.1, 0.2, 0.5, 0.2, 0.5, 0.3, 0.1, 0.3)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "glimpse.db")
    with s.session() as session, session.begin():
        for i in range(1, 6):
            session.add(
                ImageRow(id=i, path=f"/p/{i}.png", size=10, mtime=float(i), content_hash=f"h{i}", status="indexed")
            )
    yield s
    s.close()


def lines(*texts: str, conf: float = 0.99) -> list[TextLine]:
    return [TextLine(t, conf, BOX) for t in texts]


def found(store: Store, *words: str) -> list[int]:
    match = text_match(words)
    assert match is not None
    return [i for i, _ in store.text_ranking(match, 10)]


def test_word_prefix_and_absent_word(store):
    store.set_ocr_results(
        ENGINE,
        [
            OcrResult(1, "h1", lines("Invoice KX4471B", "total 42.00")),
            OcrResult(2, "h2", lines("Harbour ferry timetable")),
            OcrResult(3, "h3", ()),  # read, no text
        ],
        min_confidence=0.8,
    )
    assert found(store, "invoice") == [1]
    assert found(store, "KX447") == [1]  # a code's prefix
    assert found(store, "timet") == [2]  # a long word's prefix
    assert found(store, "ferry", "harbour") == [2]
    assert found(store, "zebra") == []
    assert found(store, "tot") == []  # a short word matches whole only
    assert text_match(["kx4471b ferry"], all_words=True) is not None
    assert [i for i, _ in store.text_ranking(text_match(["kx4471b ferry"], all_words=True) or "", 10)] == []
    assert sorted(found(store, "kx4471b ferry")) == [1, 2]  # words OR-ed, as in the keyword index
    assert store.text_scores(text_match(["invoice"]) or "", [1, 2]).keys() == {1}


def test_low_confidence_noise_is_kept_but_not_searchable(store):
    store.set_ocr_results(ENGINE, [OcrResult(1, "h1", lines("sunset", conf=0.62) + lines("beach"))], 0.8)
    assert found(store, "sunset") == []
    assert found(store, "beach") == [1]
    got = store.text_of([1, 2])
    assert set(got) == {1}
    assert [(ln.text, round(ln.confidence, 2), ln.box) for ln in got[1].lines] == [
        ("sunset", 0.62, BOX),
        ("beach", 0.99, BOX),
    ]
    assert got[1].engine == ENGINE


def test_a_page_s_texts_come_in_one_read_with_the_matched_words_marked(store):
    store.set_ocr_results(
        ENGINE,
        [
            OcrResult(4, "h4", lines("Gate B12 closed", "Café B120")),
            OcrResult(3, "h3", lines("Exit only")),
            OcrResult(2, "h2", lines("noise", conf=0.3)),  # nothing in the keyword index: no text shown
        ],
        0.8,
    )
    match = text_match(["b12", "cafe"])  # a code as a prefix, an accent folded as the index folds it
    assert match is not None
    a, b = MARK_START, MARK_END
    assert store.page_texts([4, 3, 2, 1], match) == {4: f"Gate {a}B12{b} closed\n{a}Café{b} {a}B120{b}", 3: "Exit only"}
    assert store.page_texts([4, 3], None) == {4: "Gate B12 closed\nCafé B120", 3: "Exit only"}


def test_excerpt_keeps_the_first_match_and_cuts_at_words():
    from search.query.highlights import ELLIPSIS, TEXT_CHARS, excerpt

    assert excerpt("short text", [[6, 10]]) == ("short text", [[6, 10]])
    words = " ".join(f"word{i:03d}" for i in range(200))  # 1,599 characters
    at = words.index("word150")
    text, spans = excerpt(words, [[at, at + 7], [3, 5]])
    assert text.startswith(ELLIPSIS) and text.endswith(ELLIPSIS) and len(text) <= TEXT_CHARS + 2
    assert [text[a:b] for a, b in spans] == ["word150"]  # the match kept, one before the window dropped
    assert text[1:].split(" ")[0].startswith("word") and len(text[1:].split(" ")[0]) == 7  # whole words
    assert text[:-1].split(" ")[-1].startswith("word") and len(text[:-1].split(" ")[-1]) == 7
    head, head_spans = excerpt(words, [])  # no match: the start
    assert head.startswith("word000 ") and head.endswith(ELLIPSIS) and head_spans == []
    cjk = "漢字" * 400  # no spaces: cut where the size says
    text, spans = excerpt(cjk, [[700, 702]])
    assert len(text) <= TEXT_CHARS + 2 and [text[a:b] for a, b in spans] == ["漢字"]


def test_pending_follows_engine_bytes_and_reocr(store):
    assert store.count_ocr_pending(ENGINE) == 5
    newest_first = [r[0] for r in store.ocr_pending(ENGINE, 10)]
    assert newest_first == [5, 4, 3, 2, 1]
    assert [r[0] for r in store.ocr_pending(ENGINE, 2, after=(4.0, 4))] == [3, 2]
    store.set_ocr_results(ENGINE, [OcrResult(i, f"h{i}", lines(f"word{i}")) for i in range(1, 6)], 0.8)
    assert store.count_ocr_pending(ENGINE) == 0
    assert store.count_ocr_pending("rapidocr newer") == 5  # an engine upgrade reads everything again
    with store.session() as s, s.begin():  # the file changed: the indexer stored its new hash
        s.execute(update(ImageRow).where(ImageRow.id == 2).values(content_hash="h2-new"))
    assert [r[0] for r in store.ocr_pending(ENGINE, 10)] == [2]
    assert store.forget_ocr_reads() == 5  # --reocr: every read pending, in the store (a stopped run resumes)
    assert store.count_ocr_pending(ENGINE) == 5
    assert found(store, "word3") == [3]  # searchable until read again
    store.set_ocr_results(ENGINE, [OcrResult(3, "h3", lines("word3"))], 0.8)
    assert [r[0] for r in store.ocr_pending(ENGINE, 10)] == [5, 4, 2, 1]
    with store.session() as s, s.begin():  # a video is not read (issue 27: its frames are not files)
        s.execute(update(ImageRow).where(ImageRow.id == 4).values(kind="video"))
    assert [r[0] for r in store.ocr_pending(ENGINE, 10)] == [5, 2, 1] and store.count_ocr_pending(ENGINE) == 3


def test_reread_replaces_the_text_and_its_keyword_row(store):
    store.set_ocr_results(ENGINE, [OcrResult(1, "h1", lines("old menu"))], 0.8)
    store.set_ocr_results(ENGINE, [OcrResult(1, "h1b", lines("new menu"))], 0.8)
    assert found(store, "old") == []
    assert found(store, "new") == [1]
    assert found(store, "menu") == [1]


def test_failure_is_recorded_and_counted(store):
    store.set_ocr_results(
        ENGINE, [OcrResult(1, "h1", error="no text read within the 60s limit"), OcrResult(2, "h2", lines("Stop"))], 0.8
    )
    assert store.text_of([1])[1].error == "no text read within the 60s limit"
    assert store.ocr_counts(ENGINE) == {"read": 2, "with_text": 1, "failed": 1, "pending": 3}


def test_deleting_an_image_drops_its_text_and_keyword_row(store, tmp_path):
    store.set_ocr_results(ENGINE, [OcrResult(3, "h3", lines("parking permit"))], 0.8)
    with store.session() as s, s.begin():
        s.delete(s.get_one(ImageRow, 3))
    assert found(store, "parking") == []
    assert store.text_of([3]) == {}
    with sqlite3.connect(tmp_path / "glimpse.db") as con:  # the FTS index holds nothing stale
        assert con.execute("INSERT INTO ocr_fts(ocr_fts) VALUES ('integrity-check')") is not None


def test_a_failed_image_is_not_a_text_hit(store):
    store.set_ocr_results(ENGINE, [OcrResult(5, "h5", lines("exit only"))], 0.8)
    with store.session() as s, s.begin():
        s.execute(update(ImageRow).where(ImageRow.id == 5).values(status="failed"))
    assert found(store, "exit") == []


def test_results_for_images_deleted_meanwhile_are_dropped(store):
    with store.session() as s, s.begin():
        s.delete(s.get_one(ImageRow, 1))
    store.set_ocr_results(ENGINE, [OcrResult(1, "h1", lines("ghost")), OcrResult(2, "h2", lines("real"))], 0.8)
    assert found(store, "ghost") == []
    assert found(store, "real") == [2]


def test_match_quotes_everything():
    assert text_match(['a"b']) == '"a" OR "b"'
    assert text_match(["KX447", "cat", "invoice"]) == '"kx447"* OR "cat" OR "invoice"*'
    assert text_match(["KX447 cat"], all_words=True) == '"kx447"* AND "cat"'
    assert text_match(["", " ", "*:^"]) is None


def test_another_language_is_another_reader(store):
    """GLIMPSE_OCR_LANG: the bundled model keeps its name; another one is another engine (every image is read
    again) with RapidOCR's PP-OCRv5 model of that language, which RapidOCR downloads (not done here)."""
    from rapidocr.utils.typings import LangRec, OCRVersion

    from indexer.ocr_read import rapidocr_params
    from search.settings import Settings
    from search.store.ocr import engine_id

    bundled, korean = engine_id("ch"), engine_id("korean")
    assert bundled is not None and bundled.endswith(" PP-OCRv6 g1") and engine_id() == bundled
    assert korean is not None and " PP-OCRv5 korean " in korean
    store.set_ocr_results(bundled, [OcrResult(i, f"h{i}", lines("word")) for i in range(1, 6)], 0.8)
    assert store.count_ocr_pending(bundled) == 0 and store.count_ocr_pending(korean) == 5
    params = rapidocr_params(1, False, "korean")
    assert params["Rec.lang_type"] is LangRec.KOREAN and params["Rec.ocr_version"] is OCRVersion.PPOCRV5
    assert "Rec.lang_type" not in rapidocr_params(1, False)  # the bundled model: RapidOCR's defaults
    with pytest.raises(Exception, match="GLIMPSE_OCR_LANG"):
        Settings.from_env({"GLIMPSE_OCR_LANG": "klingon"})


def test_equal_scores_come_by_id_so_a_longer_list_continues_a_shorter_one(store):
    """The same text in many images (one app's screenshots) ties: the query path's paging needs a total order."""
    store.set_ocr_results(ENGINE, [OcrResult(i, f"h{i}", lines("Settings menu")) for i in (5, 2, 4, 1)], 0.8)
    match = text_match(["settings"])
    assert match is not None
    short, longer = store.text_ranking(match, 2), store.text_ranking(match, 4)
    assert [i for i, _ in longer] == [1, 2, 4, 5] and longer[:2] == short
    assert len({score for _, score in longer}) == 1


def test_reocr_marks_reads_pending_without_rewriting_the_keyword_index(store, tmp_path):
    """Marking a million reads pending must not rewrite a million keyword rows (migration 0014): the
    keyword index follows a change of the text, and of nothing else."""
    from search.store.schema import OCR_FTS_TABLE

    store.set_ocr_results(ENGINE, [OcrResult(i, f"h{i}", lines(f"word{i} menu")) for i in range(1, 6)], 0.8)
    con = sqlite3.connect(tmp_path / "glimpse.db")

    def segments() -> list:
        return con.execute(f"SELECT id, block FROM {OCR_FTS_TABLE}_data ORDER BY id").fetchall()

    before = segments()
    assert store.forget_ocr_reads() == 5
    assert segments() == before
    assert found(store, "menu") == [1, 2, 3, 4, 5]
    with con:  # the text itself changes: its keyword row follows
        con.execute("UPDATE ocr_images SET text = 'fresh menu' WHERE image_id = 2")
    assert segments() != before
    assert found(store, "fresh") == [2] and found(store, "word2") == []
    con.close()


def test_a_copy_takes_the_text_read_in_its_original(store):
    """A copied file (same bytes, new name) is not read again: its row takes the original's text, found by
    its words, and it is not pending; the original's text outlives it, and the copy's outlives the original."""
    store.set_ocr_results(ENGINE, [OcrResult(2, "h2", lines("KX4471B receipt"))], 0.8)
    with store.transaction() as s:
        store.copy_image(s, 2, "/p/copy of 2.png", None, None, 10, 9.0, "h2")  # the fixture has no roots
    with store.session() as s:
        copy_id = s.query(ImageRow.id).filter(ImageRow.path == "/p/copy of 2.png").scalar()
    assert found(store, "KX447") == sorted([2, copy_id])
    assert copy_id not in [r[0] for r in store.ocr_pending(ENGINE, 10)]
    assert store.text_of([copy_id])[copy_id].lines == store.text_of([2])[2].lines
    with store.transaction() as s:
        store.delete_images(s, [2])
    assert found(store, "receipt") == [copy_id]


def test_a_word_inside_chinese_or_japanese_text_is_found(store):
    """Chinese and Japanese write words without spaces between them: a word is found anywhere in a line, as
    adjacent characters (not the same characters apart), and the text is shown as it was read, the word marked."""
    store.set_ocr_results(
        ENGINE,
        [
            OcrResult(1, "h1", lines("東京タワーの夜景", "入口 KX447東京")),
            OcrResult(2, "h2", lines("北京大学图书馆")),
            OcrResult(3, "h3", lines("서울에서 만나요")),
        ],
        0.8,
    )
    assert found(store, "東京") == [1]
    assert found(store, "タワー") == [1]
    assert found(store, "图书馆") == [2]
    assert found(store, "서울") == [3]
    assert found(store, "京都") == [] and found(store, "東タ") == []  # the characters, but not side by side
    assert found(store, "kx447") == [1]  # a code beside Chinese characters is still a code
    marked = store.page_texts([1, 2], text_match(["東京"]))
    assert marked[2] == "北京大学图书馆"  # shown as read
    plain, spans = marked_spans(marked[1])
    assert plain == "東京タワーの夜景\n入口 KX447東京"
    assert [plain[a:b] for a, b in spans] == ["東京", "東京"]
    from search.query.image_text import text_on_image  # the detail page: the line holding the word outlined

    page = text_on_image(store, 1, "タワー")
    assert page is not None and page.text == plain and len(page.boxes) == 1
    assert [page.text[a:b] for a, b in page.spans] == ["タワー"]


def test_text_read_before_the_cjk_tokens_is_found_after_the_upgrade(tmp_path):
    """A home whose texts were stored before migration 0015 (a CJK run one token): the upgrade re-indexes
    them, so a word inside the run is found without reading the images again; a downgrade gives them back."""
    from search.store.migrate import downgrade

    db = tmp_path / "old.db"
    s = Store(db)
    with s.session() as session, session.begin():
        session.add(ImageRow(id=1, path="/p/1.png", size=10, mtime=1.0, content_hash="h1", status="indexed"))
    s.close()
    downgrade(db, "0014")
    with sqlite3.connect(db) as con:  # as the stage and the indexer stored them then: a run one token
        con.execute(
            "INSERT INTO ocr_images (image_id, engine, content_hash, read_at, text, lines) "
            "VALUES (1, ?, 'h1', '2026-12-01 00:00:00', '東京タワーの夜景\nexit 3', '[]')",
            (ENGINE,),
        )
        assert con.execute("SELECT rowid FROM ocr_fts WHERE ocr_fts MATCH '\"東京タワーの夜景\"'").fetchall() == [(1,)]
        con.execute("UPDATE images SET path = '/p/北京大学 1.png' WHERE id = 1")
        con.execute("DELETE FROM images_fts")
        con.execute("INSERT INTO images_fts (rowid, name, folders, captions) VALUES (1, '北京大学 1 png', 'p', '')")
    store = Store(db)  # opening upgrades to head
    try:
        assert found(store, "東京") == [1] and found(store, "exit") == [1]
        from search.query.keywords import match_expression

        assert [i for i, _ in store.keyword_ranking(match_expression("大学") or "", 10)] == [1]  # the file name
        assert store.page_texts([1], None) == {1: "東京タワーの夜景\nexit 3"}
        assert store.count_ocr_pending(ENGINE) == 0  # nothing to read again
    finally:
        store.close()
    downgrade(db, "0014")
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT text FROM ocr_images").fetchone()[0] == "東京タワーの夜景\nexit 3"
