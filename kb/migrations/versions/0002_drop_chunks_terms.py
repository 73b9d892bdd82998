"""chunks.terms is gone: written as 0 since the keyword index moved to tantivy, read by nothing.

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Every node sharing a PostgreSQL catalogue runs this kb or newer from now on: an older one still
    names the column in its reads and writes."""
    if "terms" in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("chunks")}:
        try:
            op.drop_column("chunks", "terms")  # SQLite >= 3.35 drops it in place (no table copy)
        except sa.exc.OperationalError as exc:  # another process opening the same old catalogue did it first
            if "no such column" not in str(exc).lower():
                raise


def downgrade() -> None:
    op.add_column("chunks", sa.Column("terms", sa.Integer(), server_default="0", nullable=False))
