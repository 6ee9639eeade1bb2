"""Job history: batches and their jobs.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

_ACTIVE = sa.text("state IN ('queued', 'running')")


def upgrade() -> None:
    op.create_table(
        "formgrader_batches",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("course", sa.String(128), nullable=False, index=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("cancelled_by", sa.String(255)),
    )
    op.create_table(
        "formgrader_jobs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("course", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("assignment", sa.String(128), nullable=False),
        sa.Column("student", sa.String(128), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("queued_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime()),
        sa.Column("finished_at", sa.DateTime()),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("log", sa.Text()),
        sa.Column("error", sa.Text()),
        sa.Column("isolation", sa.String(16)),
        sa.Column("ran_on", sa.Text()),
    )
    op.create_index(
        "formgrader_jobs_one_active",
        "formgrader_jobs",
        ["course", "action", "assignment", "student"],
        unique=True,
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )
    op.create_index("formgrader_jobs_by_state", "formgrader_jobs", ["state", "course"])
    op.create_table(
        "formgrader_batch_jobs",
        sa.Column(
            "batch_id", sa.Integer(), sa.ForeignKey("formgrader_batches.id"), primary_key=True
        ),
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("formgrader_jobs.id"), primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("formgrader_batch_jobs")
    op.drop_table("formgrader_jobs")
    op.drop_table("formgrader_batches")
