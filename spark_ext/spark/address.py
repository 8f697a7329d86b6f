"""Where the store is: from the Spark conf, the environment, or the embedded default.

Resolution order for Python code on the driver (:func:`resolve`):

1. a Spark session configured by :func:`spark_ext.configure` (or by ``spark-defaults.conf``):
   ``spark.sparkext.locator`` and ``spark.sparkext.secretFile``; when
   ``spark.sparkext.embedded`` is true the embedded server is looked up again (it may
   have been restarted on another port);
2. the environment: ``SPARK_EXT_LOCATOR`` (``host:port``) with ``SPARK_EXT_SECRET_FILE``
   or ``SPARK_EXT_SECRET``;
3. the embedded server of this user (``$SPARK_EXT_HOME``), started when needed.

Clients are cached per (address, secret): every :class:`~spark_ext.StoreTable` of a process
shares one connection pool per server.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spark_ext.exceptions import BadArgumentError

CONF_PREFIX = "spark.sparkext."
CONF_LOCATOR = "spark.sparkext.locator"
CONF_SECRET_FILE = "spark.sparkext.secretFile"
CONF_EMBEDDED = "spark.sparkext.embedded"
CONF_HOME = "spark.sparkext.home"
CONF_CATALOG = "spark.sparkext.catalogName"

ENV_LOCATOR = "SPARK_EXT_LOCATOR"
ENV_SECRET_FILE = "SPARK_EXT_SECRET_FILE"
ENV_SECRET = "SPARK_EXT_SECRET"

_lock = threading.Lock()
_clients: dict[tuple[tuple[str, int], bytes | None], Any] = {}


@dataclass(frozen=True)
class StoreAddress:
    """How to reach a cluster: locator address, secret, and whether it is the embedded one."""

    locator: tuple[str, int]
    secret: bytes | None = None
    secret_file: str | None = None
    embedded: bool = False
    home: str | None = None

    @property
    def locator_string(self) -> str:
        return f"{self.locator[0]}:{self.locator[1]}"


def parse_locator(value: Any, option: str = "locator") -> tuple[str, int]:
    """``"host:port"`` (or a ``(host, port)`` pair) -> ``(host, port)``, or a clear error."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        host, port = value
    elif isinstance(value, str):
        host, sep, port_s = value.strip().rpartition(":")
        if not sep or not port_s.isdigit():
            raise BadArgumentError(f"option {option}={value!r}: expected 'host:port', e.g. '127.0.0.1:7100'")
        port = int(port_s)
    else:
        raise BadArgumentError(f"option {option}={value!r}: expected a 'host:port' string, got {type(value).__name__}")
    if not isinstance(host, str) or not host or any(c.isspace() for c in host):
        raise BadArgumentError(f"option {option}={value!r}: the host part is empty or has spaces")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise BadArgumentError(f"option {option}={value!r}: the port must be a number in 1..65535")
    return host, port


def read_secret_file(path: Any, option: str = "secret_file") -> bytes:
    """The secret stored in ``path`` (whitespace stripped), or a clear error."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise BadArgumentError(f"option {option}={path!r}: expected the path of a file holding the secret")
    p = Path(path).expanduser()
    if not p.is_file():
        raise BadArgumentError(f"option {option}={str(path)!r}: no such file")
    try:
        value = p.read_bytes().strip()
    except OSError as e:
        raise BadArgumentError(f"option {option}={str(path)!r}: cannot read it ({e.strerror})") from None
    if not value:
        raise BadArgumentError(f"option {option}={str(path)!r}: the file is empty")
    return value


def embedded_address(home: str | None = None) -> StoreAddress:
    """The embedded server of ``home`` (default ``$SPARK_EXT_HOME``), started when needed."""
    from spark_ext.client import embedded

    with _lock:
        old = os.environ.get("SPARK_EXT_HOME")
        if home is not None:
            os.environ["SPARK_EXT_HOME"] = home
        try:
            locator, secret = embedded.ensure_embedded()
            h = str(embedded.home())
        finally:
            if home is not None:
                if old is None:
                    os.environ.pop("SPARK_EXT_HOME", None)
                else:
                    os.environ["SPARK_EXT_HOME"] = old
    return StoreAddress(locator, secret, str(Path(h) / "secret"), True, h)


def from_env() -> StoreAddress | None:
    """The address given by ``SPARK_EXT_LOCATOR`` (and its secret), or None."""
    loc = os.environ.get(ENV_LOCATOR)
    if not loc:
        return None
    locator = parse_locator(loc, ENV_LOCATOR)
    sf = os.environ.get(ENV_SECRET_FILE)
    if sf:
        return StoreAddress(locator, read_secret_file(sf, ENV_SECRET_FILE), sf)
    s = os.environ.get(ENV_SECRET)
    return StoreAddress(locator, s.encode() if s else None)


def _conf_get(spark: Any, key: str) -> str | None:
    try:
        v = spark.conf.get(key, None)
    except Exception:  # pragma: no cover - a closed session
        return None
    return None if v in (None, "") else str(v)


def from_spark(spark: Any) -> StoreAddress | None:
    """The address recorded in a session's conf by :func:`spark_ext.configure`, or None."""
    if _conf_get(spark, CONF_EMBEDDED) == "true":
        return embedded_address(_conf_get(spark, CONF_HOME))
    loc = _conf_get(spark, CONF_LOCATOR)
    if loc is None:
        return None
    sf = _conf_get(spark, CONF_SECRET_FILE)
    return StoreAddress(parse_locator(loc, CONF_LOCATOR), read_secret_file(sf, CONF_SECRET_FILE) if sf else None, sf)


def resolve(spark: Any = None) -> StoreAddress:
    """The store this process should talk to (see the module docstring for the order)."""
    if spark is not None:
        a = from_spark(spark)
        if a is not None:
            return a
    return from_env() or embedded_address()


def catalog_name(spark: Any) -> str | None:
    return None if spark is None else _conf_get(spark, CONF_CATALOG)


def client_for(address: StoreAddress) -> Any:
    """A shared :class:`~spark_ext.client.client.StoreClient` for ``address``."""
    from spark_ext.client.client import StoreClient

    key = (address.locator, address.secret)
    with _lock:
        c = _clients.get(key)
        if c is None:
            c = _clients[key] = StoreClient(address.locator, address.secret)
        return c


def forget_clients() -> None:
    """Close and drop every cached client (tests; after a cluster restart)."""
    with _lock:
        for c in _clients.values():
            c.close()
        _clients.clear()
