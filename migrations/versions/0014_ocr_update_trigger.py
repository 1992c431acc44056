"""ocr_images: the keyword row follows an update of the text only (issue 26)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 22:05:00

"""

from typing import Sequence, Union

from alembic import op

from search.store.schema import OCR_FTS_TABLE

revision: str = "0014"
down_revision: Union[str, None] = "0013"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _update_trigger(of: str) -> None:
    op.execute("DROP TRIGGER IF EXISTS ocr_images_au")
    op.execute(
        f"CREATE TRIGGER ocr_images_au AFTER UPDATE {of}ON ocr_images BEGIN "
        f"INSERT INTO {OCR_FTS_TABLE}({OCR_FTS_TABLE}, rowid, text) VALUES ('delete', old.image_id, old.text); "
        f"INSERT INTO {OCR_FTS_TABLE}(rowid, text) VALUES (new.image_id, new.text); END"
    )


def upgrade() -> None:
    # `--reocr` marks every read pending (content_hash = NULL) in one statement: with a trigger on any
    # column, that rewrote every image's keyword row too, for text that had not changed.
    _update_trigger("OF text ")


def downgrade() -> None:
    _update_trigger("")
