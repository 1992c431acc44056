"""jobs: videos indexed, frames kept, videos failed, videos skipped (issue 27)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 19:00:00

"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: Union[str, None] = "0012"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_COLUMNS = ("videos", "frames", "videos_failed", "videos_skipped")


def upgrade() -> None:
    # Counted in the transaction that commits each video, like the other job counts.
    with op.batch_alter_table("jobs") as batch:
        for column in _COLUMNS:
            batch.add_column(sa.Column(column, sa.Integer(), nullable=False, server_default=sa.text("0")))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for column in reversed(_COLUMNS):
            batch.drop_column(column)
