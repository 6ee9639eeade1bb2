from hubservices.common.db import run_migrations
from tests.unit.sample_migrations.notes.models import Base

run_migrations(Base.metadata)
