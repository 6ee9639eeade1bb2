"""`make demo`: a local hub on http://127.0.0.1:8000 with all three services.

Dummy authenticator (password ``demo``), local-process spawner, SQLite, and the demo's users:
``admin`` (hub admin), ``instructor`` (grader of course101), ``student1``..``student3``, who
fetch and submit course101's assignments in JupyterLab.
Run from ``.demo/`` (the Makefile does), which holds all of the demo's state.
"""

import json
import os
import sys
from pathlib import Path

from hubservices.common.hubconfig import services_and_roles

c = get_config()  # noqa: F821

NBGRADER_FORMGRADER = "nbgrader.server_extensions.formgrader"
#: JupyterLab plugins the demo's servers leave out: nbgrader's grading (the service's job) and
#: the news popup, which would ask to fetch news from the internet.
DISABLED_LAB_PLUGINS = [
    "@jupyter/nbgrader:formgrader",
    "@jupyter/nbgrader:create-assignment",
    "@jupyterlab/apputils-extension:announcements",
]

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
c.JupyterHub.load_groups = {
    "formgrade-course101": {"users": ["instructor"]},
    # the course page imports this group as course101's roster
    "course101-students": {"users": ["student1", "student2", "student3"]},
}

#: course101's nbgrader exchange, shared by the formgrader service and the students' servers.
exchange = here / "exchange"
exchange.mkdir(mode=0o777, parents=True, exist_ok=True)

c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = str(here / "home" / "{username}")
c.Spawner.cmd = [str(Path(sys.executable).with_name("jupyterhub-singleuser"))]
if os.geteuid() == 0:
    c.Spawner.args = ["--allow-root"]

# Students fetch and submit in JupyterLab (Nbgrader > Assignment List) through the exchange above.
# Grading is the formgrader service's: nbgrader's per-server formgrader is switched off.
singleuser_config = here / "singleuser-config"
(singleuser_config / "labconfig").mkdir(parents=True, exist_ok=True)
(singleuser_config / "nbgrader_config.py").write_text(
    f"""import os
c = get_config()  # noqa: F821
c.Exchange.root = {str(exchange)!r}
# every demo server runs as this OS user, whose name nbgrader would give every submission
c.CourseDirectory.student_id = os.environ.get("JUPYTERHUB_USER", "*")
"""
)
(singleuser_config / "jupyter_server_config.json").write_text(
    json.dumps({"ServerApp": {"jpserver_extensions": {NBGRADER_FORMGRADER: False}}})
)
(singleuser_config / "labconfig" / "page_config.json").write_text(
    json.dumps({"disabledExtensions": {plugin: True for plugin in DISABLED_LAB_PLUGINS}})
)
c.Spawner.environment = {"JUPYTER_CONFIG_PATH": str(singleuser_config)}

services, roles = services_and_roles(
    data_dir=str(here / "data"),
    args={
        "formgrader": [
            f"--config={project / 'deploy/local/course101/formgrader_config.py'}",
            f"--exchange={exchange}",
        ]
    },
)
c.JupyterHub.services = services
c.JupyterHub.load_roles = roles
