from hubservices.common.db import run_migrations
from hubservices.stats.models import Base

run_migrations(Base.metadata)
