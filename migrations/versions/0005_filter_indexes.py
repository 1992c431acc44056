"""index the columns search filters read: folder (path) and date (taken_at, mtime) ranges of indexed rows

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 17:50:00

"""

from typing import Sequence, Union

from alembic import op


revision: str = "0005"
down_revision: Union[str, None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.create_index("ix_images_status_path", ["status", "path"], unique=False)
        batch_op.create_index("ix_images_status_taken_at", ["status", "taken_at", "mtime"], unique=False)
        batch_op.create_index("ix_images_status_mtime", ["status", "mtime", "taken_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_index("ix_images_status_mtime")
        batch_op.drop_index("ix_images_status_taken_at")
        batch_op.drop_index("ix_images_status_path")
