"""JupyterHub for the compose recipe: hubservices on PostgreSQL, Prometheus with a hub token.

Mounted at /etc/jupyterhub/jupyterhub_config.py in the hub container; state lives in the
hub-data volume at /srv/jupyterhub, course files and the nbgrader exchange in /srv/courses.
Replace the dummy authenticator and the local-process spawner with your own (e.g.
DockerSpawner) before real use.
"""

import os

from hubservices.common.hubconfig import (
    CUSTOM_SCOPES,
    prometheus_service_and_role,
    services_and_roles,
)

c = get_config()  # noqa: F821

# Inside the container the hub listens on every interface, so that Prometheus reaches it on the
# compose network; where the host publishes it is HUB_ADDRESS (docker-compose.yml): the host's
# 127.0.0.1 unless you set it, and only once a real authenticator replaces the dummy one.
c.JupyterHub.bind_url = "http://0.0.0.0:8000"
c.JupyterHub.db_url = "sqlite:////srv/jupyterhub/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "/srv/jupyterhub/jupyterhub_cookie_secret"

c.JupyterHub.authenticator_class = "dummy"  # replace: this accepts any password
c.Authenticator.admin_users = {"admin"}
c.JupyterHub.spawner_class = "simple"

# The services run inside this container and keep their data in PostgreSQL.
services, roles = services_and_roles(
    data_dir="/srv/jupyterhub/hubservices",
    environment={"HUBSERVICES_DATABASE_URL": os.environ["HUBSERVICES_DATABASE_URL"]},
)
c.JupyterHub.services = services
c.JupyterHub.load_roles = roles

# Prometheus scrapes /services/stats/metrics and /services/cull/metrics with this token, whose
# role holds only the metrics scope (students, who may reach every service, do not hold it).
c.JupyterHub.custom_scopes = CUSTOM_SCOPES
prometheus, prometheus_role = prometheus_service_and_role(os.environ["PROMETHEUS_API_TOKEN"])
c.JupyterHub.services.append(prometheus)
c.JupyterHub.load_roles.append(prometheus_role)

DUMMY = {"dummy", "jupyterhub.auth.DummyAuthenticator"}
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
hub_address = os.environ.get("HUB_ADDRESS", "127.0.0.1")
if str(c.JupyterHub.get("authenticator_class")) in DUMMY and hub_address not in LOOPBACK:
    raise SystemExit(
        f"HUB_ADDRESS={hub_address} would publish a hub that takes any password: "
        "configure a real authenticator in jupyterhub_config.py first"
    )
