"""ocr_images.text: Chinese, Japanese and Korean characters one token each, so a word inside a line matches

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 23:00:00

"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

from search.store.ocr import SEP, index_text

revision: str = "0015"
down_revision: Union[str, None] = "0014"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_BATCH = 1000


def _rewrite(convert) -> None:
    """Each stored text through ``convert``, the changed ones written back (the update trigger re-indexes
    them), a batch of rows at a time."""
    conn = op.get_bind()
    last = 0
    while True:
        rows = conn.execute(
            sa.text(
                "SELECT image_id, text FROM ocr_images WHERE text IS NOT NULL AND image_id > :last "
                "ORDER BY image_id LIMIT :n"
            ),
            {"last": last, "n": _BATCH},
        ).all()
        if not rows:
            return
        changed = []
        for image_id, text in rows:
            new = convert(text)
            if new != text:
                changed.append({"id": image_id, "text": new})
        if changed:
            conn.execute(sa.text("UPDATE ocr_images SET text = :text WHERE image_id = :id"), changed)
        last = rows[-1][0]


def upgrade() -> None:
    _rewrite(lambda text: "\n".join(index_text(line) for line in text.split("\n")))


def downgrade() -> None:
    _rewrite(lambda text: text.replace(SEP, ""))
