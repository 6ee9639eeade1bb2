"""JupyterHub for the compose recipe: hubservices on PostgreSQL, Prometheus with a hub token.

Mounted at /etc/jupyterhub/jupyterhub_config.py in the hub container; state lives in the
hub-data volume at /srv/jupyterhub, course files and the nbgrader exchange in /srv/courses.
Replace the dummy authenticator and the local-process spawner with your own (e.g.
DockerSpawner) before real use.
"""

import os

from hubservices.common.hubconfig import services_and_roles

c = get_config()  # noqa: F821

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

# Prometheus scrapes /services/stats/metrics and /services/cull/metrics with this token.
c.JupyterHub.services.append(
    {"name": "prometheus", "api_token": os.environ["PROMETHEUS_API_TOKEN"]}
)
c.JupyterHub.load_roles.append(
    {
        "name": "prometheus",
        "description": "Scrape the hubservices metrics",
        "scopes": ["access:services!service=stats", "access:services!service=cull"],
        "services": ["prometheus"],
    }
)
