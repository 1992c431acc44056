"""search.store.schema: file names the file system holds round-trip unchanged, vectors come back unit-length,
and ids no row can have are dropped before they reach SQLite."""

from __future__ import annotations

import os

import numpy as np
from sqlalchemy import select

from search.store.database import Store
from search.store.schema import ImageRow, pack_vector, row_id, row_ids, unpack_vectors


def test_non_utf8_file_names_round_trip(tmp_path):
    store = Store(tmp_path / "g.db")
    names = ["/p/plain.jpg", "/p/é.jpg", os.fsdecode(b"/p/b\xff.jpg")]
    with store.transaction() as s:
        store.write_images(s, [{"path": n, "size": 1, "mtime": 1.0, "status": "failed"} for n in names])
    with store.session() as s:
        assert sorted(s.scalars(select(ImageRow.path))) == sorted(names)
        # equality lookups bind through the same type
        assert s.scalar(select(ImageRow.path).where(ImageRow.path == names[2])) == names[2]
    assert set(store.file_states()) == set(names)  # the raw DB-API read decodes BLOB names too
    store.close()


def test_vectors_come_back_unit_length_in_float32():
    v = np.array([[3.0, 4.0], [1.0, 0.0]], dtype=np.float32)
    blobs = [pack_vector(x / np.linalg.norm(x)) for x in v]
    out = unpack_vectors(blobs, 2)
    assert out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    assert unpack_vectors([], 2).shape == (0, 2)


def test_ids_no_row_can_have_are_dropped():
    assert row_ids([0, 1, 2**63 - 1, 2**63, -5]) == [1, 2**63 - 1]
    assert row_id(2**64) is None and row_id(7) == 7
