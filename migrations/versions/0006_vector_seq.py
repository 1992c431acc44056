"""vector_seq: which write stored each vector, so a publish can add just what changed since its version

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 17:45:00

"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = "0006"
down_revision: Union[str, None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    for table in ("images", "captions"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("vector_seq", sa.Integer(), nullable=True))
            batch_op.create_index(f"ix_{table}_vector_seq", ["vector_seq"], unique=False)
    # Every stored vector counts as written by write 1; index versions published before this
    # revision have no id list, so the first publish after it rebuilds from scratch anyway.
    op.execute("UPDATE images SET vector_seq = 1 WHERE vector IS NOT NULL AND status = 'indexed'")
    op.execute("UPDATE captions SET vector_seq = 1 WHERE vector IS NOT NULL")


def downgrade() -> None:
    for table in ("images", "captions"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(f"ix_{table}_vector_seq")
            batch_op.drop_column("vector_seq")
