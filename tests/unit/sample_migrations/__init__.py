"""A tiny alembic migrations package (table ``items``) for testing hubservices.common.db."""
