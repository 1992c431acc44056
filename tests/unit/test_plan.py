"""The diff (indexer.plan) against a Store on a temporary database: what each kind of change becomes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from indexer.hashing import file_hash
from indexer.plan import Plan, Scan, diff, scan
from search.store.database import Store
from search.store.schema import utcnow

VECTOR = b"\x00\x3c" * 4  # any stored vector: the diff only asks whether there is one


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "home" / "glimpse.db")
    yield s
    s.close()


@pytest.fixture
def root(tmp_path, store) -> tuple[Path, int]:
    folder = tmp_path / "pics"
    folder.mkdir()
    return folder, store.ensure_root(str(folder))


def put(path: Path, data: bytes, mtime: float | None = None) -> Path:
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def stored(store: Store, path: Path, root_id: int, *, vector: bool = True, **stat) -> int:
    """A row for ``path`` as an earlier run left it (its stat and hash as of now unless given)."""
    st = path.stat() if path.exists() else None
    values = dict(
        path=str(path),
        real_path=None,
        root_id=root_id,
        size=stat.get("size", st.st_size if st else 0),
        mtime=stat.get("mtime", st.st_mtime if st else 0.0),
        content_hash=stat.get("content_hash", file_hash(str(path)) if st else None),
        status="indexed" if vector else "pending",
        error=None,
        vector=VECTOR if vector else None,
        indexed_at=utcnow(),
    )
    with store.transaction() as s:
        store.write_images(s, [values])
    return store.image_id_for_path(str(path))


def plan_for(store: Store, root: Path, root_id: int) -> tuple[Scan, Plan]:
    states = store.file_states()
    found = scan(store, {str(root): root_id}, {st[5] for st in states.values()})
    return found, diff(found, states, store)


def test_new_file_is_embedded_and_hashed_by_the_reader(store, root):
    folder, root_id = root
    put(folder / "a.jpg", b"aaaa")
    _, plan = plan_for(store, folder, root_id)
    assert [(e.entry.path, e.row_id, e.content_hash, e.hashed) for e in plan.embed] == [
        (str(folder / "a.jpg"), None, None, False)
    ]  # no stored file of that size: not hashed up front
    assert plan.sidecars == []  # no sidecar beside it: nothing to read
    assert not (plan.touch or plan.moves or plan.copies or plan.gone or plan.refused)


def test_unchanged_file_is_left_alone(store, root):
    folder, root_id = root
    stored(store, put(folder / "a.jpg", b"aaaa"), root_id)
    _, plan = plan_for(store, folder, root_id)
    assert plan.unchanged == 1
    assert not (plan.embed or plan.touch or plan.moves or plan.copies or plan.gone or plan.refused)


def test_touched_file_keeps_its_vector(store, root):
    folder, root_id = root
    path = put(folder / "a.jpg", b"aaaa", mtime=1_000_000)
    row_id = stored(store, path, root_id)
    os.utime(path, (2_000_000, 2_000_000))  # same bytes, new mtime
    _, plan = plan_for(store, folder, root_id)
    assert [(t.row_id, t.entry.mtime) for t in plan.touch] == [(row_id, 2_000_000)]
    assert plan.unchanged == 1 and not plan.embed and not plan.changed_ids


def test_changed_file_is_re_embedded_into_its_row(store, root):
    folder, root_id = root
    path = put(folder / "a.jpg", b"aaaa", mtime=1_000_000)
    row_id = stored(store, path, root_id)
    put(path, b"bbbb", mtime=2_000_000)  # same size, other bytes: hashed up front, and that hash kept
    _, plan = plan_for(store, folder, root_id)
    assert [(e.row_id, e.content_hash, e.hashed) for e in plan.embed] == [(row_id, file_hash(str(path)), True)]
    assert plan.changed_ids == {row_id} and not plan.touch


def test_moved_file_takes_its_row_along(store, root):
    folder, root_id = root
    old = put(folder / "old.jpg", b"aaaa")
    row_id = stored(store, old, root_id)
    old.rename(folder / "new.jpg")
    _, plan = plan_for(store, folder, root_id)
    assert [(m.row_id, m.entry.path) for m in plan.moves] == [(row_id, str(folder / "new.jpg"))]
    assert not plan.gone and not plan.embed


def test_copied_file_reuses_the_vector_of_the_original(store, root):
    folder, root_id = root
    src_id = stored(store, put(folder / "a.jpg", b"aaaa"), root_id)
    put(folder / "b.jpg", b"aaaa")
    _, plan = plan_for(store, folder, root_id)
    assert [(c.src_id, c.entry.path) for c in plan.copies] == [(src_id, str(folder / "b.jpg"))]
    assert plan.unchanged == 1 and not plan.embed and not plan.moves


def test_deleted_file_is_gone(store, root):
    folder, root_id = root
    path = put(folder / "a.jpg", b"aaaa")
    row_id = stored(store, path, root_id)
    put(folder / "b.jpg", b"bbbbbbbb")
    path.unlink()
    _, plan = plan_for(store, folder, root_id)
    assert plan.gone == {str(path): row_id}
    assert [e.entry.path for e in plan.embed] == [str(folder / "b.jpg")]


@pytest.mark.parametrize("how", ["missing", "empty mount point"])
def test_a_root_that_is_not_there_keeps_its_rows(store, root, how):
    folder, root_id = root
    path = put(folder / "a.jpg", b"aaaa")
    stored(store, path, root_id)
    path.unlink()
    if how == "missing":
        folder.rmdir()
    found, plan = plan_for(store, folder, root_id)
    assert found.unavailable == [str(folder)] and root_id not in found.available
    assert not plan.gone and not plan.embed
    assert [r.available for r in store.roots()] == [False]


def test_a_symlink_leading_outside_is_refused(store, root, tmp_path):
    folder, root_id = root
    outside = put(tmp_path / "secret.jpg", b"secret")
    (folder / "link.jpg").symlink_to(outside)
    _, plan = plan_for(store, folder, root_id)
    assert [(r.entry.path, r.row_id) for r in plan.refused] == [(str(folder / "link.jpg"), None)]
    assert "outside the indexed folders" in plan.refused[0].entry.error
    assert not plan.embed


def test_a_refused_entry_over_an_old_row_names_that_row(store, root, tmp_path):
    folder, root_id = root
    link = put(folder / "link.jpg", b"was a file")
    row_id = stored(store, link, root_id)
    link.unlink()
    link.symlink_to(put(tmp_path / "secret.jpg", b"secret"))
    _, plan = plan_for(store, folder, root_id)
    assert [(r.entry.path, r.row_id) for r in plan.refused] == [(str(link), row_id)]


def test_a_row_without_vector_with_same_stat_is_embedded_again(store, root):
    """After a model change (vectors dropped) or a crash between the row and its vector."""
    folder, root_id = root
    row_id = stored(store, put(folder / "a.jpg", b"aaaa"), root_id, vector=False)
    _, plan = plan_for(store, folder, root_id)
    assert [(e.row_id, e.hashed) for e in plan.embed] == [(row_id, False)]
    assert not plan.changed_ids and not plan.sidecars


def test_a_sidecar_that_appears_changes_or_goes_is_read_again_without_re_embedding(store, root):
    """The sidecar's own stat is in the change check: the image did not change, its captions did."""
    folder, root_id = root
    image = put(folder / "a.jpg", b"aaaa")
    row_id = stored(store, image, root_id)
    sidecar = put(folder / "a.txt", b"a caption written after the image was indexed\n")
    for step in ("appears", "unchanged", "changes", "goes"):
        if step == "changes":
            put(sidecar, b"another caption\n", mtime=sidecar.stat().st_mtime + 5)
        elif step == "goes":
            sidecar.unlink()
        _, plan = plan_for(store, folder, root_id)
        assert not (plan.embed or plan.touch) and plan.unchanged == 1, step
        assert [e.path for e in plan.sidecars] == ([] if step == "unchanged" else [str(image)]), step
        if plan.sidecars:
            store.set_sidecar_captions({str(image): (plan.sidecars[0].sidecar, [])})  # as the writer records it
    assert plan.sidecars[0].sidecar is None  # gone: nothing to read, the captions it gave are dropped
    assert store.image_id_for_path(str(image)) == row_id


def test_a_new_file_with_a_sidecar_reads_it(store, root):
    folder, root_id = root
    put(folder / "a.jpg", b"aaaa")
    put(folder / "a.jpg.txt", b"the second sidecar name\n")
    _, plan = plan_for(store, folder, root_id)
    assert [(e.path, e.sidecar is not None) for e in plan.sidecars] == [(str(folder / "a.jpg"), True)]
