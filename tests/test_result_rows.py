"""Search results are hydrated from the covering index ``ix_images_result``, never from the table rows that
hold the vectors (at 10M images a table of 16 GB the page cache does not keep), and give the same fields."""

from __future__ import annotations

import os
import sqlite3

import numpy as np
import pytest
from sqlalchemy import event

from search.query.results import to_result
from search.store.database import Store
from search.store.schema import pack_vector


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "db.sqlite")
    yield s
    s.close()


def test_result_rows_read_the_covering_index_and_equal_the_table_rows(store):
    rng = np.random.default_rng(0)
    odd = os.fsdecode(b"/p/caf\xe9.jpg")  # not UTF-8: stored as a BLOB path
    rows = [
        dict(path=p, size=10 + i, mtime=1.7e9 + i, status=st, vector=pack_vector(rng.standard_normal(8)), width=w,
             height=h, format=fmt, taken_at=t)
        for i, (p, st, w, h, fmt, t) in enumerate([
            ("/p/a.jpg", "indexed", 640, 480, "JPEG", "2021:05:06 07:08:09"),
            (odd, "indexed", None, None, None, None),
            ("/p/b.png", "failed", 1, 1, "PNG", None),
        ])
    ]  # fmt: skip
    with store.transaction() as s:
        store.write_images(s, rows)
    ids = [1, 2, 3, 99]
    statements: list[str] = []
    store.engine.dispose()  # new connections, each traced
    event.listen(store.engine, "connect", lambda con, _: con.set_trace_callback(statements.append))
    got = store.result_rows(ids)
    table = store.get_images(ids)
    assert sorted(got) == sorted(table) == [1, 2, 3]
    for i in got:
        assert got[i].path == table[i].path and got[i].status == table[i].status
        assert to_result(got[i], 0.5, "c") == to_result(table[i], 0.5, "c")
    assert got[2].path == odd
    reads = [s for s in statements if "ix_images_result" in s]
    assert reads
    plain = sqlite3.connect(store.engine.url.database)
    try:
        plans = [" | ".join(r[-1] for r in plain.execute("EXPLAIN QUERY PLAN " + s)) for s in reads]
    finally:
        plain.close()
    assert all("USING COVERING INDEX ix_images_result" in p for p in plans), plans
