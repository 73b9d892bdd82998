"""The catalogue as the last release before migrations wrote it (kb 0.1, main at 61a906d): every table,
created where missing, and the one column added by hand before (`chunks.ocr`). Idempotent, so a
catalogue written by any earlier kb (which has no version table) starts here.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    have = set(sa.inspect(op.get_bind()).get_table_names())

    if 'audit' not in have:
        op.create_table('audit',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.Column('actor', sa.String(length=200), nullable=False),
        sa.Column('action', sa.String(length=50), nullable=False),
        sa.Column('collection', sa.String(length=200), nullable=True),
        sa.Column('detail', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('id')
        )
        op.create_index(op.f('ix_audit_actor'), 'audit', ['actor'], unique=False)
        op.create_index(op.f('ix_audit_at'), 'audit', ['at'], unique=False)
    if 'chunk_changes' not in have:
        op.create_table('chunk_changes',
        sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('collection_id', sa.Integer(), nullable=False),
        sa.Column('chunk_id', sa.BigInteger(), nullable=False),
        sa.Column('added', sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint('seq')
        )
        op.create_index(op.f('ix_chunk_changes_collection_id'), 'chunk_changes', ['collection_id'], unique=False)
    if 'collections' not in have:
        op.create_table('collections',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name')
        )
    if 'embedding_cache' not in have:
        op.create_table('embedding_cache',
        sa.Column('model', sa.String(length=500), nullable=False),
        sa.Column('text_sha256', sa.String(length=64), nullable=False),
        sa.Column('vector', sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint('model', 'text_sha256')
        )
    if 'groups' not in have:
        op.create_table('groups',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name')
        )
    if 'jobs' not in have:
        op.create_table('jobs',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('collection', sa.String(length=200), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('params', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('progress', sa.JSON(), nullable=False),
        sa.Column('result', sa.JSON(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('worker', sa.String(length=200), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('started_at', sa.DateTime(), nullable=True),
        sa.Column('heartbeat_at', sa.DateTime(), nullable=True),
        sa.Column('finished_at', sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id')
        )
        op.create_index(op.f('ix_jobs_collection'), 'jobs', ['collection'], unique=False)
        op.create_index(op.f('ix_jobs_status'), 'jobs', ['status'], unique=False)
        op.create_index('one_running_job_per_collection', 'jobs', ['collection'], unique=True, sqlite_where=sa.text("status = 'running'"), postgresql_where=sa.text("status = 'running'"))
    if 'users' not in have:
        op.create_table('users',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('password_hash', sa.String(length=500), nullable=True),
        sa.Column('admin', sa.Boolean(), nullable=False),
        sa.Column('failed_sign_ins', sa.Integer(), nullable=False),
        sa.Column('locked_until', sa.DateTime(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name')
        )
    if 'api_tokens' not in have:
        op.create_table('api_tokens',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('token_sha256', sa.String(length=64), nullable=False),
        sa.Column('prefix', sa.String(length=20), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('revoked_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token_sha256')
        )
        op.create_index(op.f('ix_api_tokens_user_id'), 'api_tokens', ['user_id'], unique=False)
    if 'documents' not in have:
        op.create_table('documents',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('collection_id', sa.Integer(), nullable=False),
        sa.Column('path', sa.String(length=2000), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=True),
        sa.Column('size', sa.BigInteger(), nullable=True),
        sa.Column('mime', sa.String(length=200), nullable=True),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('pages', sa.Integer(), nullable=True),
        sa.Column('chunk_count', sa.Integer(), nullable=False),
        sa.Column('indexed_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['collection_id'], ['collections.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('collection_id', 'path')
        )
        op.create_index(op.f('ix_documents_collection_id'), 'documents', ['collection_id'], unique=False)
        op.create_index(op.f('ix_documents_sha256'), 'documents', ['sha256'], unique=False)
    if 'evaluations' not in have:
        op.create_table('evaluations',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('collection_id', sa.Integer(), nullable=False),
        sa.Column('finished_at', sa.DateTime(), nullable=False),
        sa.Column('qa_file', sa.String(length=2000), nullable=False),
        sa.Column('corpus', sa.String(length=2000), nullable=True),
        sa.Column('metrics', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['collection_id'], ['collections.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id')
        )
        op.create_index(op.f('ix_evaluations_collection_id'), 'evaluations', ['collection_id'], unique=False)
    if 'grants' not in have:
        op.create_table('grants',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('group_id', sa.Integer(), nullable=True),
        sa.Column('collection', sa.String(length=200), nullable=False),
        sa.Column('level', sa.String(length=10), nullable=False),
        sa.ForeignKeyConstraint(['group_id'], ['groups.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('user_id', 'group_id', 'collection')
        )
        op.create_index(op.f('ix_grants_group_id'), 'grants', ['group_id'], unique=False)
        op.create_index(op.f('ix_grants_user_id'), 'grants', ['user_id'], unique=False)
    if 'group_members' not in have:
        op.create_table('group_members',
        sa.Column('group_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['group_id'], ['groups.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('group_id', 'user_id')
        )
    if 'ingest_runs' not in have:
        op.create_table('ingest_runs',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('collection_id', sa.Integer(), nullable=False),
        sa.Column('command', sa.String(length=50), nullable=False),
        sa.Column('roots', sa.JSON(), nullable=False),
        sa.Column('started_at', sa.DateTime(), nullable=False),
        sa.Column('finished_at', sa.DateTime(), nullable=True),
        sa.Column('seconds', sa.Float(), nullable=True),
        sa.Column('counts', sa.JSON(), nullable=False),
        sa.Column('errors', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['collection_id'], ['collections.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id')
        )
    if 'queries' not in have:
        op.create_table('queries',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('collection_id', sa.Integer(), nullable=False),
        sa.Column('asked_at', sa.DateTime(), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('question', sa.Text(), nullable=False),
        sa.Column('retrieved', sa.JSON(), nullable=False),
        sa.Column('found', sa.Boolean(), nullable=False),
        sa.Column('backend', sa.String(length=50), nullable=True),
        sa.Column('model', sa.String(length=500), nullable=True),
        sa.Column('timings', sa.JSON(), nullable=False),
        sa.Column('prompt_tokens', sa.Integer(), nullable=True),
        sa.Column('completion_tokens', sa.Integer(), nullable=True),
        sa.Column('answer', sa.Text(), nullable=True),
        sa.Column('citations', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['collection_id'], ['collections.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id')
        )
        op.create_index(op.f('ix_queries_asked_at'), 'queries', ['asked_at'], unique=False)
        op.create_index(op.f('ix_queries_collection_id'), 'queries', ['collection_id'], unique=False)
    if 'chunks' not in have:
        op.create_table('chunks',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('document_id', sa.Integer(), nullable=False),
        sa.Column('ordinal', sa.Integer(), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('page', sa.Integer(), nullable=True),
        sa.Column('heading', sa.Text(), nullable=True),
        sa.Column('char_start', sa.Integer(), nullable=False),
        sa.Column('char_end', sa.Integer(), nullable=False),
        sa.Column('token_count', sa.Integer(), nullable=False),
        sa.Column('terms', sa.Integer(), nullable=False),
        sa.Column('embed_sha256', sa.String(length=64), nullable=False),
        sa.Column('ocr', sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.ForeignKeyConstraint(['document_id'], ['documents.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id')
        )
        op.create_index(op.f('ix_chunks_document_id'), 'chunks', ['document_id'], unique=False)
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("chunks")}
    if "ocr" not in columns:  # catalogues from before OCR
        try:
            op.add_column("chunks", sa.Column("ocr", sa.Boolean(), server_default=sa.false(), nullable=False))
        except sa.exc.OperationalError as exc:  # another process opening the same old catalogue did it first
            if "duplicate column" not in str(exc).lower():
                raise


def downgrade() -> None:
    raise NotImplementedError("the first revision has no older schema to go back to")
