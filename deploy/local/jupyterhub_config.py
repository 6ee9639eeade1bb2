"""`make demo`: a local hub on http://127.0.0.1:8000 with all three services.

Dummy authenticator (password ``demo``), local-process spawner, SQLite, and the demo's users:
``admin`` (hub admin), ``instructor`` (grader of course101), ``student1``..``student3``.
Run from ``.demo/`` (the Makefile does), which holds all of the demo's state.
"""

import os
from pathlib import Path

from services.common.hubconfig import services_and_roles

c = get_config()  # noqa: F821

here = Path.cwd()
project = Path(__file__).resolve().parents[2]

c.JupyterHub.bind_url = "http://127.0.0.1:8000"
c.JupyterHub.db_url = f"sqlite:///{here}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = str(here / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.command = [str(project / "node_modules/.bin/configurable-http-proxy")]
c.ConfigurableHTTPProxy.pid_file = str(here / "proxy.pid")

c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = "demo"
c.Authenticator.allowed_users = {"instructor", "student1", "student2", "student3"}
c.Authenticator.admin_users = {"admin"}
c.JupyterHub.load_groups = {"formgrade-course101": {"users": ["instructor"]}}

c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = str(here / "home" / "{username}")
if os.geteuid() == 0:
    c.Spawner.args = ["--allow-root"]

services, roles = services_and_roles(
    data_dir=str(here / "data"),
    args={"formgrader": [f"--config={project / 'deploy/local/course101/formgrader_config.py'}"]},
)
c.JupyterHub.services = services
c.JupyterHub.load_roles = roles
