"""Fencing: refuse requests that carry a leader token older than one already seen.

A request may carry ``fence: {group, token}``. The registry remembers the newest token
per leader group; an older one is refused with FENCED and changes nothing. A newer one
becomes the newest (written to disk first, so a restart does not forget it and let a
deposed leader back in), and ``on_newer(group, token)`` is called (a store server aborts
the deposed leader's unfinished transactions with it). Requests without ``fence`` are
not fenced (plain clients).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from spark_ext.exceptions import BadArgumentError, FencedError
from spark_ext.store.files import write_json_atomic

logger = logging.getLogger(__name__)


class FenceRegistry:
    """Newest fencing token per group. Thread-safe; ``check`` is O(1)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._group_locks: dict[str, threading.Lock] = {}
        self._newest: dict[str, int] = {}
        #: Called with (group, token) after a group's newest token grew (outside the lock).
        self.on_newer: Callable[[str, int], object] | None = None
        if self.path is not None and self.path.exists():
            self._newest = {k: int(v) for k, v in json.loads(self.path.read_text()).items()}

    def __call__(self, metadata: dict[str, Any]) -> None:
        self.check(metadata.get("fence"))

    def check(self, fence: Any) -> None:
        """Accept or refuse a request's fence (None: not fenced).

        Raises:
            FencedError: the token is older than the newest seen for its group.
            BadArgumentError: a malformed fence.
        """
        if fence is None:
            return
        if not isinstance(fence, dict) or not isinstance(fence.get("group"), str) \
                or not isinstance(fence.get("token"), int) or isinstance(fence.get("token"), bool):
            raise BadArgumentError(f"'fence' must be {{group: string, token: integer}}, got {fence!r}")
        group, token = fence["group"], fence["token"]
        with self._lock:
            newest = self._newest.get(group, 0)
            if token < newest:
                logger.warning("refused a request of group %s with stale token %d (newest %d)", group, token, newest)
                raise FencedError(
                    f"leader group {group!r}: token {token} is older than token {newest} of the current leader; "
                    "this driver lost its leadership and may not write",
                    group=group, token=token, newest=newest,
                )
            if token <= newest:
                return
            self._newest[group] = token
            self._persist()
        self._newer(group, token)

    def _newer(self, group: str, token: int) -> None:
        if self.on_newer is not None:
            try:
                self.on_newer(group, token)
            except Exception:
                logger.exception("handling the new token %d of group %s failed", token, group)

    @contextmanager
    def guard(self, fence: Any) -> Iterator[None]:
        """Check a fence and hold it for the duration of the write it protects.

        The check and the write happen under the group's lock, so a write that passed
        with token N cannot land after a write with token N+1 (it is refused instead).
        Unfenced requests are not serialized.
        """
        if fence is None:
            yield
            return
        self.check(fence)  # validates the shape before a lock is chosen by its group
        with self._lock:
            glock = self._group_locks.setdefault(fence["group"], threading.Lock())
        with glock:
            self.check(fence)  # a newer leader may have written while we waited
            yield

    def observe(self, group: str, token: int) -> None:
        """Learn that ``token`` was granted for ``group`` (from the lock service)."""
        with self._lock:
            if token <= self._newest.get(group, 0):
                return
            self._newest[group] = token
            self._persist()
        self._newer(group, token)

    def snapshot(self) -> dict[str, int]:
        """Newest token per group. O(groups)."""
        with self._lock:
            return dict(self._newest)

    def newest(self, group: str) -> int:
        with self._lock:
            return self._newest.get(group, 0)

    def _persist(self) -> None:
        if self.path is None:
            return
        write_json_atomic(self.path, self._newest)
