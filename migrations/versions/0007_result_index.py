"""ix_images_result: a covering index of what search results show, so serving never reads the vector-laden rows

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 04:10:00

"""

from typing import Sequence, Union

from alembic import op


revision: str = "0007"
down_revision: Union[str, None] = "0006"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

COLUMNS = ["id", "status", "path", "size", "mtime", "width", "height", "format", "taken_at"]


def upgrade() -> None:
    # One pass over the table (at 10M images: its 16 GB, a few minutes, once).
    op.create_index("ix_images_result", "images", COLUMNS, unique=False)


def downgrade() -> None:
    op.drop_index("ix_images_result", table_name="images")
