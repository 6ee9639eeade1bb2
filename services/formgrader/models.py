"""The formgrader's job history: every long action, queued to finished, in the service's database.

Kept in the database, not in memory, so that a restart mid-batch resumes the unfinished jobs
(``running`` ones are queued again) and graders see what ran, when, for whom, and why it failed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: States a job passes through; the first two are "active": at most one active job per
#: (course, action, assignment, student).
QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
ACTIVE = (QUEUED, RUNNING)
_ACTIVE_SQL = text("state IN ('queued', 'running')")


class Base(DeclarativeBase):
    pass


class Batch(Base):
    """What one request asked for: autograde of every submission, or one action."""

    __tablename__ = "formgrader_batches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    course: Mapped[str] = mapped_column(String(128), index=True)
    action: Mapped[str] = mapped_column(String(32))
    user: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime())
    cancelled_by: Mapped[str | None] = mapped_column(String(255))


class BatchJob(Base):
    """A job a batch counts: its own, or an active one it joined."""

    __tablename__ = "formgrader_batch_jobs"

    batch_id: Mapped[int] = mapped_column(ForeignKey("formgrader_batches.id"), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("formgrader_jobs.id"), primary_key=True)


class Job(Base):
    """One NbGraderAPI call in a worker; joined by a later request for the same ids."""

    __tablename__ = "formgrader_jobs"
    __table_args__ = (
        # the rule "one job per submission at a time", kept by the database too
        Index(
            "formgrader_jobs_one_active",
            "course",
            "action",
            "assignment",
            "student",
            unique=True,
            sqlite_where=_ACTIVE_SQL,
            postgresql_where=_ACTIVE_SQL,
        ),
        Index("formgrader_jobs_by_state", "state", "course"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    course: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))  # an NbGraderAPI method (worker.ACTIONS)
    assignment: Mapped[str] = mapped_column(String(128))
    student: Mapped[str] = mapped_column(String(128), default="")  # "" when it takes none
    user: Mapped[str] = mapped_column(String(255))  # who asked first
    state: Mapped[str] = mapped_column(String(16), default=QUEUED)
    queued_at: Mapped[datetime] = mapped_column(DateTime())
    started_at: Mapped[datetime | None] = mapped_column(DateTime())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime())
    #: Starts, > 1 when a restart interrupted it and it ran again.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: nbgrader's log of the call (its end, when long).
    log: Mapped[str | None] = mapped_column(Text)
    #: Why it failed or was cancelled.
    error: Mapped[str | None] = mapped_column(Text)
    #: How an autograde ran the student's code: "bubblewrap", "none" (allowed unsandboxed),
    #: "unavailable" (refused); None for actions that run no student code.
    isolation: Mapped[str | None] = mapped_column(String(16))
    #: The Dask workers that executed its notebooks (space-separated; None when run here).
    ran_on: Mapped[str | None] = mapped_column(Text)

    @property
    def args(self) -> list[str]:
        """The ids the NbGraderAPI method takes."""
        return [self.assignment, self.student] if self.student else [self.assignment]


class CourseRecord(Base):
    """A course a hub admin added at run time (config-file courses are not stored here)."""

    __tablename__ = "formgrader_courses"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime())
    #: Set when retired: no longer served; its files and gradebook stay, its id stays taken.
    retired_at: Mapped[datetime | None] = mapped_column(DateTime())
    retired_by: Mapped[str | None] = mapped_column(String(255))
