from services.common.db import run_migrations
from services.cull.models import Base

run_migrations(Base.metadata)
