"""A tiny alembic migrations package (table ``items``) for testing services.common.db."""
