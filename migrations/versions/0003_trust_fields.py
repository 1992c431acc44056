"""trust fields: where each image really lies, per-root opt-in for links leaving the folder, job warnings

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 15:10:00

"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = "0003"
down_revision: Union[str, None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("roots", schema=None) as batch_op:
        batch_op.add_column(sa.Column("follow_external_links", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("warnings", sa.Text(), nullable=True))
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("real_path", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("real_path")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("warnings")
    with op.batch_alter_table("roots", schema=None) as batch_op:
        batch_op.drop_column("follow_external_links")
