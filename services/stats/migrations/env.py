from services.common.db import run_migrations
from services.stats.models import Base

run_migrations(Base.metadata)
