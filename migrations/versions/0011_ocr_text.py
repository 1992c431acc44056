"""ocr_images: the text read in each image (engine, lines with confidence and boxes), and its keyword index

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 15:40:00

"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

from search.store.schema import OCR_FTS_TABLE, OCR_FTS_TOKENIZER

revision: str = "0011"
down_revision: Union[str, None] = "0010"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "ocr_images",
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("engine", sa.String(length=64), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=True),
        sa.Column("read_at", sa.DateTime(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("lines", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("image_id"),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("ocr_read", sa.Integer(), nullable=False, server_default=sa.text("0")))
        batch.add_column(sa.Column("ocr_failed", sa.Integer(), nullable=False, server_default=sa.text("0")))
        batch.add_column(sa.Column("ocr_seconds", sa.Float(), nullable=True))
    # An external-content FTS5 index over ocr_images.text, kept in step by triggers: a text row and its
    # keyword row change in the same transaction, and an image's delete (ON DELETE CASCADE) drops both.
    op.execute(
        f"CREATE VIRTUAL TABLE {OCR_FTS_TABLE} USING fts5(text, content='ocr_images', content_rowid='image_id', "
        f"tokenize = '{OCR_FTS_TOKENIZER}')"
    )
    op.execute(
        f"CREATE TRIGGER ocr_images_ai AFTER INSERT ON ocr_images BEGIN "
        f"INSERT INTO {OCR_FTS_TABLE}(rowid, text) VALUES (new.image_id, new.text); END"
    )
    op.execute(
        f"CREATE TRIGGER ocr_images_ad AFTER DELETE ON ocr_images BEGIN "
        f"INSERT INTO {OCR_FTS_TABLE}({OCR_FTS_TABLE}, rowid, text) VALUES ('delete', old.image_id, old.text); END"
    )
    op.execute(
        f"CREATE TRIGGER ocr_images_au AFTER UPDATE ON ocr_images BEGIN "
        f"INSERT INTO {OCR_FTS_TABLE}({OCR_FTS_TABLE}, rowid, text) VALUES ('delete', old.image_id, old.text); "
        f"INSERT INTO {OCR_FTS_TABLE}(rowid, text) VALUES (new.image_id, new.text); END"
    )


def downgrade() -> None:
    for trigger in ("ocr_images_ai", "ocr_images_ad", "ocr_images_au"):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.execute(f"DROP TABLE IF EXISTS {OCR_FTS_TABLE}")
    op.drop_table("ocr_images")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("ocr_seconds")
        batch.drop_column("ocr_failed")
        batch.drop_column("ocr_read")
