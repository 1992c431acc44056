"""Chinese, Japanese and Korean characters one token each in ocr_fts and images_fts, so a word inside a line,
a caption or a file name matches

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 23:00:00

"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.orm import Session

from search.store.fts import fts_text, sync_fts
from search.store.schema import CaptionRow, ImageRow
from search.store.words import CJK_CHAR, SEP

revision: str = "0015"
down_revision: Union[str, None] = "0014"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_BATCH = 1000


def _rewrite_ocr(convert) -> None:
    """Each text read in an image through ``convert``, the changed ones written back (the update trigger
    re-indexes them), a batch of rows at a time: no image is read again."""
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


def _resync_keywords() -> None:
    """The keyword rows of the images whose path or captions hold such characters, written again as the
    indexer writes them now (search.store.fts.sync_fts)."""
    with Session(bind=op.get_bind()) as s:
        ids = {i for i, path in s.execute(sa.select(ImageRow.id, ImageRow.path)) if CJK_CHAR.search(str(path))}
        ids |= {i for i, t in s.execute(sa.select(CaptionRow.image_id, CaptionRow.text)) if CJK_CHAR.search(t)}
        sync_fts(s, ids)
        s.flush()


def upgrade() -> None:
    _rewrite_ocr(lambda text: "\n".join(fts_text(line) for line in text.split("\n")))
    _resync_keywords()


def downgrade() -> None:
    # The keyword rows keep their tokens (the code of this revision cannot write the older ones): under the
    # older code a run of those characters typed whole no longer finds them, as it would not have inside a line.
    _rewrite_ocr(lambda text: text.replace(SEP, ""))
