"""keyword index: FTS5 over file names, folder names and captions, filled from the existing rows

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 18:00:00

"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.orm import Session

from search.store.schema import FTS_TABLE
from search.store.fts import sync_fts


revision: str = "0004"
down_revision: Union[str, None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # porter: "cats" finds "cat"; remove_diacritics 2: "cafe" finds "café".
    op.execute(
        f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(name, folders, captions, "
        "tokenize = 'porter unicode61 remove_diacritics 2')"
    )
    # Backfill: the same Python that keeps the rows in step (the name splitting is Python).
    s = Session(bind=op.get_bind())
    ids = [r[0] for r in s.execute(sa.text("SELECT id FROM images WHERE status = 'indexed'"))]
    sync_fts(s, ids)
    s.flush()


def downgrade() -> None:
    op.execute(f"DROP TABLE IF EXISTS {FTS_TABLE}")
