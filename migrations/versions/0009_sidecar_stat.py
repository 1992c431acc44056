"""images.sidecar: the stat of the sidecar caption file an image's sidecar captions came from

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 14:00:00

"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op


revision: str = "0009"
down_revision: Union[str, None] = "0008"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # NULL for every existing row: the next run reads each sidecar there is once, which also picks up the
    # sidecars written after their image was indexed (never read before this revision).
    op.add_column("images", sa.Column("sidecar", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("sidecar")
