"""A failed document's reason and the limit it hit as columns (documents.error_code, limit_setting,
limit_value): whether unchanged bytes are worth reading again is decided from them, not parsed back out
of the error's words. Catalogues written before get them from those words, once, here.

Revision ID: 0003
"""

import re

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = (("error_code", sa.String(40)), ("limit_setting", sa.String(40)), ("limit_value", sa.Float()))
# The reasons kb wrote at the start of documents.error (ingest/extract.py), longest first.
CODES = ("too large when unpacked", "no extractable text", "unsupported file type", "reader stopped",
         "empty file", "timed out", "too large", "encrypted", "corrupt", "unreadable", "changed")
TWICE = "the second time on the same bytes"


def reason_of(error: str) -> tuple[str | None, str | None, float | None]:
    """(code, limit setting, its value) from an error written by kb before this revision."""
    code = next((c for c in CODES if error.startswith(c)), None)
    found = re.findall(r"limit ([\d,.]*\d)", error)
    value = float(found[-1].replace(",", "")) if found else None
    setting = None
    if code == "timed out":
        setting = "file_timeout_s"
    elif code == "too large when unpacked":
        setting = "max_memory_mb" if "of memory" in error else "max_unpacked_mb" if "MB unpacked" in error else None
    elif code == "too large":
        setting = "max_file_mb"
    if code == "reader stopped" and TWICE in error:
        code = "reader stopped twice"
    return code, setting if value is not None else None, value if setting else None


def upgrade() -> None:
    bind = op.get_bind()
    have = {c["name"] for c in sa.inspect(bind).get_columns("documents")}
    for name, kind in COLUMNS:
        if name not in have:
            op.add_column("documents", sa.Column(name, kind, nullable=True))
    docs = sa.table("documents", sa.column("id", sa.Integer), sa.column("error", sa.Text),
                    sa.column("status", sa.String), *(sa.column(n, k) for n, k in COLUMNS))
    failed = bind.execute(sa.select(docs.c.id, docs.c.error).where(docs.c.status == "failed",
                                                                   docs.c.error_code.is_(None))).all()
    for doc_id, error in failed:
        code, setting, value = reason_of(error or "")
        bind.execute(sa.update(docs).where(docs.c.id == doc_id).values(error_code=code, limit_setting=setting,
                                                                      limit_value=value))


def downgrade() -> None:
    for name, _ in COLUMNS:
        op.drop_column("documents", name)
