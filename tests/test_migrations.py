"""Alembic owns the schema: upgrade from empty, downgrade, no model/migration drift."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

from alembic import command

from search.store.database import Store
from search.store.migrate import alembic_config, downgrade, upgrade_to_head
from search.store.schema import Base

TABLES = {"roots", "images", "captions", "embedding_model", "jobs", "ocr_images", "frames"}


def tables(db) -> set[str]:
    with sqlite3.connect(db) as con:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_upgrade_from_empty_to_head_and_downgrade(tmp_path):
    db = tmp_path / "glimpse.db"
    upgrade_to_head(db)
    assert TABLES <= tables(db)
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchone() is not None
    downgrade(db, "base")
    assert not (TABLES & tables(db))
    upgrade_to_head(db)  # and back up again
    assert TABLES <= tables(db)


def test_models_and_migrations_do_not_drift(tmp_path):
    db = tmp_path / "glimpse.db"
    upgrade_to_head(db)
    command.check(alembic_config(db))  # raises if autogenerate would emit operations


def test_store_upgrades_on_open_and_keeps_data(tmp_path):
    db = tmp_path / "glimpse.db"
    store = Store(db)
    store.ensure_root("/photos")
    store.close()
    store = Store(db)  # a second open runs upgrade again: a no-op that keeps rows
    assert [r.path for r in store.roots()] == ["/photos"]
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_glimpse_db_upgrade_command(tmp_path):
    home = tmp_path / "h"
    proc = subprocess.run(
        [sys.executable, "-m", "glimpse.cli", "--home", str(home), "db", "upgrade"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert TABLES <= tables(home / "glimpse.db")
    assert set(Base.metadata.tables) == TABLES
