"""Alembic migrations of the stats tables (version table ``alembic_version_stats``)."""
