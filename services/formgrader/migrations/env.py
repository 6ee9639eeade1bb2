from hubservices.common.db import run_migrations
from hubservices.formgrader.models import Base

run_migrations(Base.metadata)
