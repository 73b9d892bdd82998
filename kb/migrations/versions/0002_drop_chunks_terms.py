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
    if "terms" in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("chunks")}:
        op.drop_column("chunks", "terms")  # SQLite >= 3.35 drops it in place (no table copy)


def downgrade() -> None:
    op.add_column("chunks", sa.Column("terms", sa.Integer(), server_default="0", nullable=False))
