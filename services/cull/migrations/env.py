from hubservices.common.db import run_migrations
from hubservices.cull.models import Base

run_migrations(Base.metadata)
