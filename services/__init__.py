"""hubservices: JupyterHub services for idle culling, usage statistics and grading."""

__version__ = "0.1.0"
