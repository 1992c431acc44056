"""images.pixel_print: the near-duplicate finder's pixel check, stored per image

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 13:40:00

"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op


revision: str = "0008"
down_revision: Union[str, None] = "0007"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # A nullable column: SQLite adds it without rewriting the table. Existing rows get their print from
    # the next `glimpse index`/`reindex` (indexer/pixel_prints.py), in batches that resume.
    op.add_column("images", sa.Column("pixel_print", sa.LargeBinary(), nullable=True))
    # Which rows still need one, without reading the table (one pass over it now, once).
    op.create_index(
        "ix_images_no_print", "images", ["id"], sqlite_where=sa.text("status = 'indexed' AND pixel_print IS NULL")
    )


def downgrade() -> None:
    op.drop_index("ix_images_no_print", table_name="images")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("pixel_print")
