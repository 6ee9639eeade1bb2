"""Files only the service's own user may read: its data directory, databases, secrets.

Created with the default umask (022 on most systems) they would be world-readable: SQLite files
hold usage history, audit trails and gradebooks.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def private_dir(path: Path) -> None:
    """Create ``path`` and its missing parents 0700; a directory that exists keeps its mode
    (the working directory, or one an admin set up on purpose)."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another service made it meanwhile
            directory.mkdir(mode=0o700)


def private_file(path: Path) -> None:
    """Create ``path`` empty and 0600 unless it exists, so what is written into it later
    (SQLite copies a database's mode to its -wal and -shm files) stays private."""
    private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
