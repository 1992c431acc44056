"""Date filters at scale decide most rows in SQL (an mtime band surely inside the range); the ids they
keep must still be exactly those whose shown day (EXIF time, else the mtime's local day) is in range."""

from __future__ import annotations

import datetime as dt

import pytest

from search.query.results import shown_date
from search.store.database import Store
from search.store.filters import in_dates


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = Store(tmp_path_factory.mktemp("dates") / "db.sqlite")
    base = dt.datetime(2023, 3, 20).timestamp()  # local midnight; spans the spring clock change in many zones
    rows = []
    for i in range(24 * 4 * 20):  # every 15 minutes (plus a few seconds) for 20 days
        taken = None if i % 5 else "2023:03:25 12:00:00"
        rows.append(dict(path=f"/p/{i}.jpg", size=1, mtime=base + i * 900 + (i % 7), taken_at=taken, status="indexed"))
    with s.transaction() as sess:
        s.write_images(sess, rows)
    yield s
    s.close()


@pytest.mark.parametrize(
    "date_from,date_to",
    [
        ("2023-03-22", "2023-03-24"),
        ("2023-03-25", "2023-03-25"),
        ("2023-03-30", None),
        (None, "2023-03-21"),
        ("2023-03-26", "2023-03-27"),
        ("2023-04-05", "2023-04-01"),
    ],
)
def test_date_filter_ids_equal_the_shown_day_rule(store, date_from, date_to):
    got = store.filtered_ids(None, date_from, date_to)
    with store.session() as s:
        from sqlalchemy import text

        rows = s.execute(text("SELECT id, taken_at, mtime FROM images")).all()
    want = sorted(i for i, t, m in rows if in_dates(shown_date(t, m)[:10], date_from, date_to))
    assert got.tolist() == want


@pytest.mark.parametrize(
    "date_from,date_to",
    [("0001-01-01", None), (None, "9999-12-31"), ("0001-01-01", "9999-12-31"), ("0999-01-01", "2023-03-24")],
)
def test_boundary_dates_filter_instead_of_failing(store, date_from, date_to):
    """The first and last valid days have no local midnight before / after them on the clock; a filter
    starting or ending there keeps every row on its open side (it raised ValueError / OverflowError)."""
    got = store.filtered_ids(None, date_from, date_to)
    with store.session() as s:
        from sqlalchemy import text

        rows = s.execute(text("SELECT id, taken_at, mtime FROM images")).all()
    want = sorted(i for i, t, m in rows if in_dates(shown_date(t, m)[:10], date_from, date_to))
    assert got.tolist() == want and len(want) > 0
