"""Environments for the processes a service starts: an allow-list, so that no secret leaks.

A service runs with the hub's token (and perhaps a database password) in its environment. A
child (the culler's warning command, a grading worker and the student code it runs) gets only
what a program needs to run, plus what it is given; a secret added to the service's
environment later stays out without anyone remembering to deny it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: What a child keeps of the service's environment.
CHILD_ENV_KEEP = frozenset(
    {
        "PATH",
        "HOME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "PYTHONPATH",
        "VIRTUAL_ENV",
        "USER",
        "LOGNAME",
        "SHELL",
        "JUPYTER_PATH",
        "JUPYTER_DATA_DIR",
    }
)


def child_env(
    environ: Mapping[str, str],
    extra: Mapping[str, str] | None = None,
    *,
    path_first: str | None = None,
) -> dict[str, str]:
    """``environ``'s harmless variables, then ``extra``; ``path_first`` leads ``PATH``.

    ``path_first`` is for a directory the child must find programs in first, e.g. the
    service's own Python's ``bin``.
    """
    env = {key: value for key, value in environ.items() if key in CHILD_ENV_KEEP}
    if path_first:
        env["PATH"] = os.pathsep.join(filter(None, [path_first, env.get("PATH")]))
    env.update(extra or {})
    return env
