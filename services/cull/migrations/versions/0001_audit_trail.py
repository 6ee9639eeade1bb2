"""Audit trail: cycles, culls, warnings.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "cull_cycles",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("examined", sa.Integer(), nullable=False),
        sa.Column("culled_servers", sa.Integer(), nullable=False),
        sa.Column("culled_users", sa.Integer(), nullable=False),
        sa.Column("kept_busy", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text()),
    )
    op.create_table(
        "culls",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "cycle_id", sa.Integer(), sa.ForeignKey("cull_cycles.id"), nullable=False, index=True
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("user", sa.String(255), nullable=False, index=True),
        sa.Column("server", sa.String(255)),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("why", sa.Text(), nullable=False),
        sa.Column("rule", sa.String(255)),
        sa.Column("idle_seconds", sa.Integer()),
        sa.Column("age_seconds", sa.Integer()),
        sa.Column("last_activity", sa.DateTime(timezone=True)),
        sa.Column("started", sa.DateTime(timezone=True)),
        sa.Column("outcome", sa.String(16), nullable=False),
    )
    op.create_table(
        "cull_warnings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("server", sa.String(255), nullable=False),
        sa.Column("started", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due", sa.DateTime(timezone=True), nullable=False),
        sa.Column("warned_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("user", "server", "started"),
    )


def downgrade() -> None:
    op.drop_table("cull_warnings")
    op.drop_table("culls")
    op.drop_table("cull_cycles")
