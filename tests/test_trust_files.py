"""Serve nothing but indexed images; no file name stops a run.

A black-box attack found that a symlink in an indexed folder (``zz.jpg -> /etc/shadow``) was
served whole by ``/api/images/<id>/file``, that an indexed image swapped for such a link was
served at once, that a sidecar symlinked to a secret became captions, and that one file name
that is not UTF-8 made every `glimpse index` exit 1. These tests replay that through the real
CLI and a real waitress server, with a secret of their own outside the indexed folder.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import draw_image, glimpse_cmd, make_images
from web_support import LiveServer

SECRET = b"TOP-SECRET-7f3a9c shadow line root:$6$salt$hash"
SECRET_CAPTION = "SECRET-CAPTION-51e2 the password is hunter2"
NON_UTF8 = b"b\xff.png"
NEWLINE = "new\nline.png"


def get(url: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def summary(out: str) -> dict[str, int]:
    line = next(line for line in out.splitlines() if line.startswith(("index:", "reindex:")))
    return {word: int(n) for n, word in (part.split()[:2] for part in line.split(": ", 1)[1].split(";")[0].split(", "))}


def db_ids(home: Path) -> dict[str, int]:
    """Every row's path -> id (through the store, so non-UTF-8 names come back as os.fsdecode gives them)."""
    from search.store.database import Store
    from search.store.schema import ImageRow

    store = Store(home / "glimpse.db")
    try:
        with store.session() as s:
            return {r.path: r.id for r in s.query(ImageRow)}
    finally:
        store.close()


def serve(home: Path) -> LiveServer:
    from search.engine import Engine
    from search.paths import Paths
    from web.app import create_app

    return LiveServer(create_app(Engine(Paths.resolve(home)), config={"GLIMPSE_ALLOWED_HOSTS": ["127.0.0.1"]}))


class Trap:
    """An indexed folder seeded the way the attack did it, and a live server over it."""

    def __init__(self, base: Path, tiny_model: str):
        self.home = base / "home"
        self.pics = base / "pics"
        outside = base / "outside"
        album = self.pics / ".album"  # hidden: the walk reaches it only through the link below
        away = base / "elsewhere" / "album"
        make_images(self.pics, 3)
        make_images(album, 2, start=50)
        make_images(away, 2, start=70)
        (away / "img_0070.txt").write_text(SECRET_CAPTION + "\n")
        outside.mkdir()
        self.secret = outside / "shadow"
        self.secret.write_bytes(SECRET)
        (outside / "caption.txt").write_text(SECRET_CAPTION + "\n")
        self.outside_image = outside / "outside.png"
        draw_image(77).save(self.outside_image)
        (self.pics / "sub").mkdir()
        draw_image(60).save(self.pics / "sub" / "real.png")

        os.symlink(self.secret, self.pics / "zz.jpg")  # the CRITICAL finding
        os.symlink(self.outside_image, self.pics / "ext.png")  # a real image, but outside
        os.symlink(self.pics / "sub" / "real.png", self.pics / "inside.png")  # inside the root: fine
        os.symlink(album, self.pics / "linked")  # a symlinked folder inside the root: followed
        os.symlink(away, self.pics / "away")  # one leading outside: not followed
        os.symlink(self.pics / "linked" / "img_0050.png", self.pics / "via.png")  # into the followed folder
        os.symlink(base / "nowhere.png", self.pics / "dangling.png")
        os.symlink(outside / "caption.txt", self.pics / "img_0001.txt")  # sidecar leading to a secret
        (self.pics / "img_0000.txt").write_text("a harmless sidecar caption\n")
        os.mkfifo(self.pics / "fifo.png")  # opening it would block
        with open(os.path.join(os.fsencode(self.pics), NON_UTF8), "wb") as f:
            draw_image(90).save(f, "PNG")
        draw_image(91).save(self.pics / NEWLINE)

        self.index_out = glimpse_cmd(
            "index", str(self.pics), "--model", tiny_model, "--workers", "0", home=self.home
        ).stdout
        self.ids = db_ids(self.home)
        self.server = serve(self.home)

    def id(self, *parts: str) -> int:
        return self.ids[str(self.pics.joinpath(*parts))]

    def url(self, path: str) -> str:
        return self.server.url + path

    def glimpse(self, *args: str, check: bool = True):
        return glimpse_cmd(*args, home=self.home, check=check)


@pytest.fixture(scope="module")
def trap(tmp_path_factory, tiny_model):
    t = Trap(tmp_path_factory.mktemp("trap"), tiny_model)
    yield t
    t.server.close()


def served_bodies(trap: Trap, image_id: int) -> dict[str, tuple[int, bytes]]:
    out = {}
    for route in (
        f"/api/images/{image_id}/file",
        f"/api/images/{image_id}/thumb",
        f"/api/images/{image_id}",
        f"/image/{image_id}",
    ):
        status, body, _ = get(trap.url(route))
        out[route] = (status, body)
    return out


def test_a_symlink_to_a_secret_is_never_served_for_any_id(trap):
    outside_png = trap.outside_image.read_bytes()
    for image_id in range(1, max(trap.ids.values()) + 3):  # every row, failed ones included, and past the end
        for route, (_status, body) in served_bodies(trap, image_id).items():
            assert SECRET not in body and b"TOP-SECRET" not in body, route
            assert outside_png not in body, route
    zz, ext = trap.id("zz.jpg"), trap.id("ext.png")
    for image_id in (zz, ext):
        assert all(status == 404 for status, _ in served_bodies(trap, image_id).values())
    failed = {f["path"]: f["error"] for f in json.loads(trap.glimpse("stats", "--json").stdout)["failed"]}
    assert "symlink to a file outside the indexed folders" in failed[str(trap.pics / "zz.jpg")]
    assert "--follow-external-links" in failed[str(trap.pics / "ext.png")]
    api_failed = json.loads(get(trap.url("/api/stats"))[1])["failed"]
    assert str(trap.pics / "zz.jpg") in {f["path"] for f in api_failed}


def test_dangling_symlink_and_fifo_are_failed_rows(trap):
    failed = {f["path"]: f["error"] for f in json.loads(trap.glimpse("stats", "--json").stdout)["failed"]}
    assert "broken symlink" in failed[str(trap.pics / "dangling.png")]
    assert "not a regular file" in failed[str(trap.pics / "fifo.png")]


def test_a_sidecar_symlinked_to_a_secret_is_not_read(trap):
    found = json.loads(trap.glimpse("search", "anything", "-k", "50", "--json").stdout)
    assert found and SECRET_CAPTION not in json.dumps(found)
    status, body, _ = get(trap.url(f"/api/images/{trap.id('img_0001.png')}"))
    assert status == 200 and json.loads(body)["captions"] == []
    status, body, _ = get(trap.url(f"/api/images/{trap.id('img_0000.png')}"))  # a plain sidecar still works
    assert json.loads(body)["captions"] == ["a harmless sidecar caption"]
    assert SECRET_CAPTION.encode() not in get(trap.url(f"/image/{trap.id('img_0001.png')}"))[1]


def test_links_inside_and_symlinked_folders_are_served_from_where_they_really_lie(trap):
    real = trap.pics / "sub" / "real.png"
    for parts, source in (
        (("inside.png",), real),
        (("via.png",), trap.pics / "linked" / "img_0050.png"),
        (("linked", "img_0051.png"), trap.pics / "linked" / "img_0051.png"),
    ):
        status, body, _ = get(trap.url(f"/api/images/{trap.id(*parts)}/file"))
        assert status == 200 and body == source.read_bytes(), (parts, body[:300])
        assert get(trap.url(f"/api/images/{trap.id(*parts)}/thumb"))[0] == 200
    # The link is pointed at the secret after indexing: the server still opens only the indexed file.
    link = trap.pics / "inside.png"
    os.unlink(link)
    os.symlink(trap.secret, link)
    try:
        status, body, _ = get(trap.url(f"/api/images/{trap.id('inside.png')}/file"))
        assert SECRET not in body and status == 200 and body == real.read_bytes()
    finally:
        os.unlink(link)
        os.symlink(real, link)


def test_a_folder_link_leading_outside_is_not_followed(trap):
    away = str(trap.pics / "away")
    assert not [p for p in trap.ids if p.startswith(away)]  # no row of any kind
    found = json.loads(trap.glimpse("search", "anything", "-k", "50", "--json").stdout)
    assert found and not [r for r in found if r["path"].startswith(away)]
    assert SECRET_CAPTION not in json.dumps(found)
    assert SECRET_CAPTION not in trap.glimpse("search", "SECRET-CAPTION-51e2", "--mode", "keywords", "--json").stdout
    said = f"{away}: symlink to a folder outside the indexed folders ({trap.pics.parent / 'elsewhere' / 'album'})"
    job = json.loads(trap.glimpse("stats", "--json").stdout)["jobs"][-1]  # the first run: `glimpse index`
    assert [w for w in job["warnings"] if w.startswith(said)] and said in trap.glimpse("stats").stdout


def test_non_utf8_and_newline_names_are_indexed_shown_escaped_and_served(trap):
    path = os.fsdecode(os.path.join(os.fsencode(trap.pics), NON_UTF8))
    assert path in trap.ids  # indexed: the run exited 0 (glimpse_cmd checks)
    shown = str(trap.pics / "b\\xff.png")
    found = json.loads(trap.glimpse("search", "anything", "-k", "50", "--json").stdout)
    assert shown in [r["path"] for r in found]
    status, body, headers = get(trap.url(f"/api/images/{trap.ids[path]}"))
    meta = json.loads(body)
    assert status == 200 and meta["path"] == shown and meta["folder"] == str(trap.pics)
    status, body, headers = get(trap.url(f"/api/images/{trap.ids[path]}/file"))
    assert status == 200 and body == Path(path).read_bytes()
    assert "xff.png" in headers["Content-Disposition"]
    status, body, headers = get(trap.url(f"/api/images/{trap.id(NEWLINE)}/file"))
    assert status == 200 and body == (trap.pics / NEWLINE).read_bytes()
    assert "\n" not in headers["Content-Disposition"] and int(headers["Content-Length"]) == len(body)
    status, part, _ = get(trap.url(f"/api/images/{trap.id(NEWLINE)}/file"), {"Range": "bytes=0-9"})
    assert status == 206 and part == body[:10]
    assert get(trap.url(f"/image/{trap.id(NEWLINE)}"))[0] == 200


def test_reindex_of_the_trap_is_a_no_op(trap):
    c = summary(trap.glimpse("reindex").stdout)
    assert (c["new"], c["changed"], c["moved"], c["deleted"], c["failed"], c["embedded"]) == (0, 0, 0, 0, 0, 0)
    assert db_ids(trap.home) == trap.ids


def test_an_indexed_image_swapped_for_a_symlink_is_not_served(trap):
    target = trap.pics / "img_0002.png"
    image_id = trap.id("img_0002.png")
    original = target.read_bytes()
    assert get(trap.url(f"/api/images/{image_id}/file"))[1] == original
    saved = trap.pics.parent / "saved.png"
    os.rename(target, saved)  # keeps the inode and mtime, to put it back as it was
    os.symlink(trap.secret, target)
    try:
        for route, (status, body) in served_bodies(trap, image_id).items():
            assert SECRET not in body, route
            if route != f"/api/images/{image_id}":  # metadata names no file content
                assert status == 404, route
        status, body, _ = get(trap.url(f"/api/images/{image_id}/file"))
        assert "no longer the file that was indexed" in json.loads(body)["error"]
    finally:
        os.unlink(target)
        os.rename(saved, target)
    assert get(trap.url(f"/api/images/{image_id}/file"))[1] == original


def test_an_indexed_image_replaced_by_another_file_is_not_served_until_restored(trap):
    target = trap.pics / "img_0002.png"
    image_id = trap.id("img_0002.png")
    saved = trap.pics.parent / "saved.png"
    os.rename(target, saved)
    draw_image(123, (300, 200)).save(target)  # a different regular file, another size
    try:
        status, body, _ = get(trap.url(f"/api/images/{image_id}/file"))
        assert status == 404 and "no longer the file that was indexed" in json.loads(body)["error"]
        assert get(trap.url(f"/api/images/{image_id}/thumb"))[0] == 404
    finally:
        os.replace(saved, target)
    status, body, _ = get(trap.url(f"/api/images/{image_id}/file"))
    assert status == 200 and body == target.read_bytes()


def test_follow_external_links_is_an_opt_in_kept_by_reindex(tmp_path, glimpse, home, tiny_model):
    pics, outside = tmp_path / "pics", tmp_path / "outside"
    make_images(pics, 2)
    make_images(outside, 1, start=40)
    os.symlink(outside / "img_0040.png", pics / "ext.png")
    glimpse("index", str(pics), "--model", tiny_model, "--follow-external-links")
    c = summary(glimpse("reindex").stdout)
    assert (c["changed"], c["failed"], c["embedded"]) == (0, 0, 0)
    stats = json.loads(glimpse("stats", "--json").stdout)
    assert stats["images_indexed"] == 3 and stats["roots"][0]["follow_external_links"] is True
    live = serve(home)
    try:
        status, body, _ = get(live.url + f"/api/images/{db_ids(home)[str(pics / 'ext.png')]}/file")
        assert status == 200 and body == (outside / "img_0040.png").read_bytes()
    finally:
        live.close()
    glimpse("index", str(pics), "--no-follow-external-links")  # taken back: the link is refused again
    stats = json.loads(glimpse("stats", "--json").stdout)
    assert stats["images_indexed"] == 2 and "outside" in stats["failed"][0]["error"]


def test_a_link_pointed_at_an_identical_file_is_followed_there_without_re_embedding(
    tmp_path, glimpse, home, tiny_model
):
    pics = tmp_path / "pics"
    make_images(pics / "sub", 1)
    real, copy = pics / "sub" / "img_0000.png", pics / "sub" / "copy.png"
    os.symlink(real, pics / "link.png")
    glimpse("index", str(pics), "--model", tiny_model)
    shutil.copy2(real, copy)  # same bytes, size and mtime
    os.unlink(pics / "link.png")
    os.symlink(copy, pics / "link.png")
    c = summary(glimpse("reindex").stdout)
    assert (c["new"], c["changed"], c["embedded"]) == (1, 0, 0)  # the copy reuses the vector; the link is updated
    data = real.read_bytes()
    real.unlink()
    glimpse("reindex")
    secret = tmp_path / "shadow"
    secret.write_bytes(SECRET)
    os.unlink(pics / "link.png")
    os.symlink(secret, pics / "link.png")  # re-pointed after the last reindex
    live = serve(home)
    try:
        status, body, _ = get(live.url + f"/api/images/{db_ids(home)[str(pics / 'link.png')]}/file")
        assert status == 200 and body == data  # served from where the walk last found it, never the secret
    finally:
        live.close()


def test_follow_external_links_follows_folder_links_too(tmp_path, glimpse, home, tiny_model):
    pics, outside = tmp_path / "pics", tmp_path / "outside"
    make_images(pics, 1)
    make_images(outside, 2, start=40)
    (outside / "img_0040.txt").write_text("a caption from outside\n")
    os.symlink(outside, pics / "away")
    glimpse("index", str(pics), "--model", tiny_model)
    assert json.loads(glimpse("stats", "--json").stdout)["images_indexed"] == 1
    glimpse("index", str(pics), "--follow-external-links")
    stats = json.loads(glimpse("stats", "--json").stdout)
    assert (stats["images_indexed"], stats["captions"]) == (3, 1)
    c = summary(glimpse("reindex").stdout)  # the choice is kept
    assert (c["new"], c["deleted"], c["embedded"]) == (0, 0, 0)
    glimpse("index", str(pics), "--no-follow-external-links")
    stats = json.loads(glimpse("stats", "--json").stdout)
    assert (stats["images_indexed"], stats["captions"]) == (1, 0)


def test_an_older_homes_root_keeps_following_the_folder_links_it_was_indexed_through(
    tmp_path, glimpse, home, tiny_model
):
    """Before folder links had the outside rule, every one was followed: a root that holds images reached
    through one leading outside keeps following its folder links after the upgrade (migration 0010); a root
    that holds none gets the rule. Either --[no-]follow-external-links replaces that choice."""
    import sqlite3

    from search.store.migrate import downgrade, upgrade_to_head

    pics, plain, outside = tmp_path / "pics", tmp_path / "plain", tmp_path / "outside"
    make_images(pics, 1)
    make_images(plain, 1, start=10)
    make_images(outside, 2, start=40)
    os.symlink(outside, pics / "away")
    glimpse("index", str(pics), "--model", tiny_model, "--follow-external-links")  # as every folder link was
    glimpse("index", str(plain))
    db = home / "glimpse.db"
    with sqlite3.connect(db) as con:  # the home as the release before the rule left it
        con.execute("UPDATE roots SET follow_external_links = 0")
    downgrade(db, "0009")
    make_images(tmp_path / "elsewhere", 1, start=60)
    os.symlink(tmp_path / "elsewhere", plain / "away")  # a folder link made after the upgrade: not followed
    upgrade_to_head(db)
    c = summary(glimpse("reindex").stdout)
    assert (c["new"], c["deleted"]) == (0, 0)
    roots = {r["path"]: r for r in json.loads(glimpse("stats", "--json").stdout)["roots"]}
    assert roots[str(pics)]["follow_external_folder_links"] is True
    assert roots[str(plain)]["follow_external_folder_links"] is False
    assert "(follows folder links leading outside)" in glimpse("stats").stdout
    glimpse("index", str(pics), "--no-follow-external-links")
    assert json.loads(glimpse("stats", "--json").stdout)["images_indexed"] == 2
