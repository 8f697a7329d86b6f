"""Small durable-file helpers shared by the log, checkpoints and the JSON state files."""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def fsync_dir(path: Path) -> None:
    """Make a file's creation, rename or removal in ``path`` durable. O(1)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:  # pragma: no cover - platforms without directory fds
        logger.debug("cannot open directory %s for fsync: %s", path, exc)
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF):  # unsupported, not a failure
            raise
    finally:
        os.close(fd)


def write_json_atomic(path: Path, obj: Any, mode: int = 0o600) -> None:
    """Replace ``path`` with ``obj`` as JSON: all of it or none, durable on return.

    Writes a temporary file, fsyncs it, renames it over ``path`` and fsyncs the folder.
    O(size).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
