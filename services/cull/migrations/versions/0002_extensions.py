"""Extensions: each "keep it running" a user asked for, per server run.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "cull_extensions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("server", sa.String(255), nullable=False),
        sa.Column("started", sa.DateTime(timezone=True), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Index("ix_cull_extensions_run", "user", "server", "started"),
    )


def downgrade() -> None:
    op.drop_table("cull_extensions")
