"""Run Alembic migrations programmatically (the app upgrades on start)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(db_path: Path | str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", f"sqlite:///{db_path}")
    # env.py leaves the caller's logging alone when this is set.
    cfg.attributes["configure_logger"] = False
    return cfg


def current_revision(db_path: Path | str) -> str | None:
    """The revision stamped in the database, read without starting Alembic."""
    if not Path(db_path).exists():
        return None
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as con:
            row = con.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def upgrade_to_head(db_path: Path | str) -> None:
    """Upgrade when behind; a database already at head costs one small read.

    Every CLI call opens the store, so the full Alembic run (~0.4 s) only
    happens when there is something to migrate.
    """
    cfg = alembic_config(db_path)
    if current_revision(db_path) == ScriptDirectory.from_config(cfg).get_current_head():
        return
    command.upgrade(cfg, "head")


def downgrade(db_path: Path | str, revision: str) -> None:
    command.downgrade(alembic_config(db_path), revision)
