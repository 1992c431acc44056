"""Run Alembic migrations programmatically (the app upgrades on start)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(db_path: Path | str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", f"sqlite:///{db_path}")
    # env.py leaves the caller's logging alone when this is set.
    cfg.attributes["configure_logger"] = False
    return cfg


def upgrade_to_head(db_path: Path | str) -> None:
    command.upgrade(alembic_config(db_path), "head")


def downgrade(db_path: Path | str, revision: str) -> None:
    command.downgrade(alembic_config(db_path), revision)
