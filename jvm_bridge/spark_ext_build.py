"""PEP 517 build backend of spark-ext: setuptools, plus pyspark when a wheel carries the jar.

The wheel's jar is compiled against pyspark's own jars (``setup.py`` runs
``jvm_bridge/build.sh``), so a wheel build needs pyspark on its classpath. Under pip's
build isolation the build environment holds only what the backend asks for: this module
adds ``pyspark`` (the same range the package depends on; pip takes it from its wheel
cache after the first install) to the wheel's build requirements. It is left out when
the build does not need it: editable installs (``pip install -e .``: ``make jar`` builds
``build/`` instead), sdists, ``SPARK_EXT_NO_JAR=1`` (a wheel without the jar) and
``PYSPARK_JARS`` (a folder of pyspark's jars given by hand).
"""

from __future__ import annotations

import os
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403 - the rest of the PEP 517 interface

PYSPARK_REQUIREMENT = "pyspark>=4.3,<4.4"


def _jar_requires() -> list[str]:
    if os.environ.get("SPARK_EXT_NO_JAR", "") not in ("", "0") or os.environ.get("PYSPARK_JARS"):
        return []
    return [PYSPARK_REQUIREMENT]


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    """setuptools' requirements, plus pyspark for the jar's classpath (see the module doc)."""
    return list(_setuptools.get_requires_for_build_wheel(config_settings)) + _jar_requires()
