"""videos: images.kind/duration/codec/poster, and the frames table (a video's kept frames and their vectors)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 19:00:00

"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: Union[str, None] = "0011"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_NO_PRINT_OLD = "status = 'indexed' AND pixel_print IS NULL"
_NO_PRINT_NEW = "status = 'indexed' AND pixel_print IS NULL AND kind = 'image'"


def upgrade() -> None:
    # Plain ALTER TABLE ADD COLUMN (O(1) in SQLite); a batch rebuild would copy 10M rows and their vectors.
    op.add_column("images", sa.Column("kind", sa.String(length=8), nullable=False, server_default=sa.text("'image'")))
    op.add_column("images", sa.Column("duration", sa.Float(), nullable=True))
    op.add_column("images", sa.Column("codec", sa.String(length=32), nullable=True))
    op.add_column("images", sa.Column("poster", sa.Float(), nullable=True))
    # A video row has no pixel print of its own: the backfill's partial index leaves it out.
    op.drop_index("ix_images_no_print", table_name="images")
    op.create_index("ix_images_no_print", "images", ["id"], sqlite_where=sa.text(_NO_PRINT_NEW))
    op.create_table(
        "frames",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("video_id", sa.Integer(), nullable=False),
        sa.Column("time", sa.Float(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("vector_seq", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["video_id"], ["images.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_frames_video_time", "frames", ["video_id", "time"])
    op.create_index("ix_frames_vector_seq", "frames", ["vector_seq"])


def downgrade() -> None:
    op.drop_index("ix_frames_vector_seq", table_name="frames")
    op.drop_index("ix_frames_video_time", table_name="frames")
    op.drop_table("frames")
    op.execute("DELETE FROM images WHERE kind = 'video'")
    op.drop_index("ix_images_no_print", table_name="images")
    op.create_index("ix_images_no_print", "images", ["id"], sqlite_where=sa.text(_NO_PRINT_OLD))
    with op.batch_alter_table("images") as batch:
        for column in ("poster", "codec", "duration", "kind"):
            batch.drop_column(column)
