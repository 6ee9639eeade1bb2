"""The Littlest JupyterHub: hubservices as hub-managed services.

Install into TLJH's hub environment and drop this file into its config directory:

    sudo /opt/tljh/hub/bin/python3 -m pip install hubservices
    sudo cp deploy/tljh/hubservices.py /opt/tljh/config/jupyterhub_config.d/
    sudo tljh-config set services.cull.enabled False   # ours replaces TLJH's idle culler
    sudo tljh-config reload hub
"""

from hubservices.common.hubconfig import services_and_roles

services, roles = services_and_roles(data_dir="/opt/tljh/state/hubservices")
c.JupyterHub.services.extend(services)  # noqa: F821 (TLJH runs this with c defined)
c.JupyterHub.load_roles.extend(roles)  # noqa: F821
