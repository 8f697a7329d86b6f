"""``spark_ext.configure(builder, **options)``: switch the extension on for a Spark session.

Every option is checked here, in Python, before anything reaches the JVM: a bad value
fails with a :class:`~spark_ext.exceptions.BadArgumentError` naming the option and the value.
Then the builder gets (``builder.config`` only stores settings; the JVM starts later, in
``getOrCreate()``):

==========================================  ===============================================
``spark.jars``                              the spark-ext jar (appended to any jars set)
``spark.sql.catalog.<catalog_name>``        ``io.sparkext.spark.SparkExtCatalog``
``spark.sql.catalog.<catalog_name>.*``      ``locator``, ``secretFile``
``spark.sql.catalog.spark_catalog``         the session catalog extension (``session_catalog``)
``spark.plugins``                           the driver/executor plug-in (appended): at
                                            ``getOrCreate()`` it fails the start when the
                                            locator does not answer
``spark.sql.extensions``                    the SQL extensions (appended): a single-row
                                            ``UPDATE``/``DELETE`` by full primary key runs
                                            as one store request, not a Spark job
``spark.sparkext.*``                        the store address for Python code on the driver
                                            (``locator``, ``secretFile``, ``embedded``,
                                            ``home``, ``catalogName``,
                                            ``executorStartServer``, ``haGroup``,
                                            ``executor.python``)
==========================================  ===============================================

JVM classes are only configured when the jar holds them; without the jar (not built yet)
the Python features (``StoreTable``, ``putInto``, ``deleteFrom``) still work and a warning
says what is missing.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spark_ext.exceptions import BadArgumentError
from spark_ext.spark import address as A

logger = logging.getLogger(__name__)

JAR_NAME = "spark-ext_2.13-0.1.0.jar"
CATALOG_CLASS = "io.sparkext.spark.SparkExtCatalog"
SESSION_CATALOG_CLASS = "io.sparkext.spark.SparkExtSessionCatalog"
PLUGIN_CLASS = "io.sparkext.spark.SparkExtPlugin"
EXTENSIONS_CLASS = "io.sparkext.spark.SparkExtSessionExtensions"
ENV_JAR = "SPARK_EXT_JAR"

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GROUP_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


@dataclass(frozen=True)
class Options:
    """The validated options of :func:`configure` (see its docstring for each one)."""

    locator: tuple[str, int] | None = None
    secret_file: str | None = None
    catalog_name: str = "store"
    session_catalog: bool = False
    jar: str | None = None
    executor_start_server: bool = False
    ha_group: str | None = None
    ha_ttl: float = 3.0
    python: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


OPTION_NAMES = ("locator", "secret_file", "catalog_name", "session_catalog", "jar",
                "executor_start_server", "ha_group", "ha_ttl", "python")


def _bool(name: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    raise BadArgumentError(f"option {name}={v!r}: expected True or False")


def validate_options(**options: Any) -> Options:
    """Check every option; no JVM, no network. Raises BadArgumentError naming the option."""
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise BadArgumentError(
            f"unknown option {unknown[0]!r} for spark_ext.configure (options: {', '.join(OPTION_NAMES)})")
    loc = options.get("locator")
    locator = None if loc is None else A.parse_locator(loc, "locator")
    sf = options.get("secret_file")
    if sf is not None:
        A.read_secret_file(sf, "secret_file")
        sf = str(Path(sf).expanduser().resolve())
        if locator is None:
            raise BadArgumentError(
                f"option secret_file={sf!r} needs a locator too (the embedded default has its own secret)")
    cat = options.get("catalog_name", "store")
    if not isinstance(cat, str) or not _NAME_RE.match(cat):
        raise BadArgumentError(
            f"option catalog_name={cat!r}: expected an identifier (letters, digits, underscore), e.g. 'store'")
    if cat.lower() == "spark_catalog":
        raise BadArgumentError(
            "option catalog_name='spark_catalog' is Spark's session catalog; keep a name such as 'store' "
            "and pass session_catalog=True to extend the session catalog")
    jar = options.get("jar")
    if jar is not None:
        if not isinstance(jar, (str, os.PathLike)) or not str(jar).endswith(".jar"):
            raise BadArgumentError(f"option jar={jar!r}: expected the path of a .jar file")
        if not Path(jar).expanduser().is_file():
            raise BadArgumentError(f"option jar={str(jar)!r}: no such file (build it with `make jar`)")
        jar = str(Path(jar).expanduser().resolve())
    ha = options.get("ha_group")
    if ha is not None and (not isinstance(ha, str) or not _GROUP_RE.match(ha)):
        raise BadArgumentError(
            f"option ha_group={ha!r}: expected a name of 1-100 letters, digits, '.', '_' or '-'")
    ttl = options.get("ha_ttl", 3.0)
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0.3 <= ttl <= 3600:
        raise BadArgumentError(f"option ha_ttl={ttl!r}: expected seconds between 0.3 and 3600")
    if options.get("ha_ttl") is not None and ha is None:
        raise BadArgumentError(f"option ha_ttl={ttl!r} needs ha_group too")
    py = options.get("python")
    if py is not None and (not isinstance(py, str) or not py):
        raise BadArgumentError(f"option python={py!r}: expected the path of a Python executable")
    return Options(
        locator=locator, secret_file=sf, catalog_name=cat,
        session_catalog=_bool("session_catalog", options.get("session_catalog", False)),
        jar=jar, executor_start_server=_bool("executor_start_server", options.get("executor_start_server", False)),
        ha_group=ha, ha_ttl=float(ttl), python=py,
    )


def default_jar() -> str | None:
    """``$SPARK_EXT_JAR``, else ``build/<jar>`` of a source checkout, else the packaged jar."""
    env = os.environ.get(ENV_JAR)
    if env and Path(env).is_file():
        return str(Path(env).resolve())
    pkg = Path(__file__).resolve().parent.parent  # spark_ext/
    for p in (pkg.parent / "build" / JAR_NAME, pkg / "jars" / JAR_NAME, pkg / JAR_NAME):
        if p.is_file():
            return str(p)
    return None


def jar_classes(jar: str) -> set[str]:
    """Which of the extension's classes the jar holds (empty if it cannot be read)."""
    try:
        with zipfile.ZipFile(jar) as z:
            names = set(z.namelist())
    except (OSError, zipfile.BadZipFile):
        return set()
    return {c for c in (CATALOG_CLASS, SESSION_CATALOG_CLASS, PLUGIN_CLASS, EXTENSIONS_CLASS)
            if c.replace(".", "/") + ".class" in names}


def _append(existing: dict[str, str], key: str, value: str) -> str:
    """A comma-separated Spark list setting with ``value`` appended once."""
    items = [p.strip() for p in existing.get(key, "").split(",") if p.strip()]
    if value not in items:
        items.append(value)
    return ",".join(items)


def settings(options: Options, store: A.StoreAddress, existing: dict[str, str] | None = None) -> dict[str, str]:
    """The Spark settings for validated options and a resolved store address. No JVM."""
    existing = existing or {}
    conf: dict[str, str] = {
        A.CONF_LOCATOR: store.locator_string,
        A.CONF_CATALOG: options.catalog_name,
        A.CONF_EMBEDDED: "true" if store.embedded else "false",
        "spark.sparkext.executorStartServer": "true" if options.executor_start_server else "false",
    }
    if store.secret_file:
        conf[A.CONF_SECRET_FILE] = store.secret_file
    if options.executor_start_server:  # the Python that runs a server an executor starts
        conf["spark.sparkext.executor.python"] = options.python or os.environ.get("PYSPARK_PYTHON") or sys.executable
    if store.home:
        conf[A.CONF_HOME] = store.home
    if options.ha_group:
        conf["spark.sparkext.haGroup"] = options.ha_group
    jar = options.jar or default_jar()
    classes: set[str] = set()
    if jar is None:
        logger.warning(
            "spark-ext: no jar found (build/%s; build it with `make jar`): Spark SQL on store tables is off, "
            "the Python features (StoreTable, putInto, deleteFrom) work", JAR_NAME)
    else:
        jars = [j for j in existing.get("spark.jars", "").split(",") if j]
        if jar not in jars:
            jars.append(jar)
        conf["spark.jars"] = ",".join(jars)
        classes = jar_classes(jar)
        missing = {CATALOG_CLASS, PLUGIN_CLASS} - classes
        if missing:
            logger.warning("spark-ext: the jar %s lacks %s; those parts stay off", jar, ", ".join(sorted(missing)))
    cat = f"spark.sql.catalog.{options.catalog_name}"
    if CATALOG_CLASS in classes:
        conf[cat] = CATALOG_CLASS
        conf[f"{cat}.locator"] = store.locator_string
        if store.secret_file:
            conf[f"{cat}.secretFile"] = store.secret_file
    if options.session_catalog:
        if SESSION_CATALOG_CLASS in classes:
            conf["spark.sql.catalog.spark_catalog"] = SESSION_CATALOG_CLASS
            conf["spark.sql.catalog.spark_catalog.locator"] = store.locator_string
            if store.secret_file:
                conf["spark.sql.catalog.spark_catalog.secretFile"] = store.secret_file
        else:
            logger.warning("spark-ext: session_catalog=True but no %s in the jar; the session catalog is unchanged",
                           SESSION_CATALOG_CLASS)
    if PLUGIN_CLASS in classes:
        conf["spark.plugins"] = _append(existing, "spark.plugins", PLUGIN_CLASS)
    if EXTENSIONS_CLASS in classes:
        # Without it, single-row UPDATE/DELETE still work, through Spark's row-level path (a job).
        conf["spark.sql.extensions"] = _append(existing, "spark.sql.extensions", EXTENSIONS_CLASS)
    conf.setdefault("spark.sql.execution.arrow.pyspark.enabled", existing.get("spark.sql.execution.arrow.pyspark.enabled", "true"))
    return conf


def configure(builder: Any, **options: Any) -> Any:
    """Switch spark-ext on for a ``SparkSession.Builder``; returns the same builder.

    Call it before ``getOrCreate()``. All options are optional and validated first::

        spark = spark_ext.configure(SparkSession.builder.master("local[2]")).getOrCreate()

    Args:
        builder: ``SparkSession.builder`` (anything with ``config(key, value)``).
        locator: ``"host:port"`` of the cluster's locator. Default: the embedded server of
            this user (``$SPARK_EXT_HOME``), started now if it is not running.
        secret_file: file holding the cluster's shared secret (with ``locator``).
        catalog_name: name of the Spark catalog of store tables (default ``"store"``:
            ``SELECT * FROM store.ns.t``).
        session_catalog: also extend Spark's session catalog, so ``CREATE TABLE t ... USING
            row`` works without a catalog prefix (default False).
        jar: path of the spark-ext jar (default: ``$SPARK_EXT_JAR``, ``build/spark-ext_2.13-0.1.0.jar``
            of a source checkout, or the jar inside the installed package).
        executor_start_server: let each executor start a missing store server on its host
            (default False): the plug-in's executor side checks, under a per-host lock, whether
            a live server of the locator runs on its host and otherwise starts ``python -m
            spark_ext.cli server start`` detached (with ``python`` below; data in
            ``$SPARK_EXT_HOME/executor-server/``), waiting until it registers. See
            ``docs/configuration.md``, "The plug-in".
        ha_group: driver HA group: ``getOrCreate()`` returns only once this driver holds
            the group's lease (a warm standby: the session starts and warms up first, then
            blocks, logging that it stands by, and takes over when the leader's lease
            lapses). Every write of the session, Python or Spark SQL, then carries the
            lease's fencing token; when the lease is lost, writes stop at once.
        ha_ttl: the lease's time to live in seconds (default 3): a dead leader is replaced
            about this fast.
        python: Python executable of the executors' workers when ``PYSPARK_PYTHON`` is not
            set (default: this interpreter, so workers see the same packages).

    Raises:
        BadArgumentError: an unknown option or a bad value, naming both.
        SparkExtError: the embedded server could not be started.
    """
    opts = validate_options(**options)
    if not callable(getattr(builder, "config", None)):
        raise BadArgumentError(
            f"configure() needs a SparkSession builder (SparkSession.builder), got {type(builder).__name__}")
    if opts.locator is not None:
        secret = A.read_secret_file(opts.secret_file) if opts.secret_file else None
        store = A.StoreAddress(opts.locator, secret, opts.secret_file)
    else:
        store = A.embedded_address()
    existing = {str(k): str(v) for k, v in (getattr(builder, "_options", None) or {}).items()}
    for k, v in settings(opts, store, existing).items():
        builder = builder.config(k, v) or builder
    os.environ.setdefault("PYSPARK_PYTHON", opts.python or sys.executable)
    from spark_ext.spark import hook

    hook.install()
    if opts.ha_group:
        _lead_before_create(builder, opts.ha_group, opts.ha_ttl, store, opts.catalog_name)
    return builder


def _lead_before_create(builder: Any, group: str, ttl: float, store: A.StoreAddress, catalog: str = "store") -> None:
    """Make ``builder.getOrCreate()`` wait for the group's leadership (a warm standby), then
    fence every write of the session, Python and JVM (see :mod:`spark_ext.spark.ha`)."""
    from spark_ext.spark.ha import lead_before_create

    lead_before_create(builder, group, ttl, store, catalog)
