"""roots.follow_external_folder_links: folder links leading outside are no longer followed, except where an
existing root relied on them

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 14:10:00

"""

import os
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op


revision: str = "0010"
down_revision: Union[str, None] = "0009"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _prefix(path: bytes | str) -> str:
    return os.path.realpath(os.fsdecode(path)).rstrip(os.sep) + os.sep


def upgrade() -> None:
    with op.batch_alter_table("roots") as batch:
        batch.add_column(
            sa.Column("follow_external_folder_links", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    # Until now every symlinked folder was followed, wherever it led. A root holding images reached that way (a
    # canonical location outside every root) keeps following its folder links, so a reindex does not drop them;
    # every other root gets the rule for files. `glimpse index --no-follow-external-links` takes it back.
    conn = op.get_bind()
    roots = conn.execute(sa.text("SELECT id, path, follow_external_links FROM roots")).all()
    inside = tuple(_prefix(path) for _, path, _ in roots)
    for root_id, _, follows in roots:
        if follows:
            continue  # follows every link already
        rows = conn.execute(
            sa.text("SELECT real_path FROM images WHERE root_id = :r AND real_path IS NOT NULL"), {"r": root_id}
        )
        if any(not (os.fsdecode(real) + os.sep).startswith(inside) for (real,) in rows):
            conn.execute(sa.text("UPDATE roots SET follow_external_folder_links = 1 WHERE id = :r"), {"r": root_id})


def downgrade() -> None:
    with op.batch_alter_table("roots") as batch:
        batch.drop_column("follow_external_folder_links")
