"""Java checks of the JVM bridge, run from pytest: build the jar (quietly), run small Java mains."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def pyspark_jars() -> str:
    import pyspark

    return os.path.join(os.path.dirname(pyspark.__file__), "jars")


@pytest.fixture(scope="session")
def java_cp() -> str:
    if shutil.which("javac") is None or shutil.which("java") is None:
        pytest.fail("no JDK on PATH: JDK 17 is a prerequisite (see README)")
    subprocess.run(["bash", str(ROOT / "jvm_bridge" / "build.sh")], check=True, cwd=ROOT)
    return os.pathsep.join([str(ROOT / "build" / "classes"), str(ROOT / "build" / "test-classes"),
                            os.path.join(pyspark_jars(), "*")])


def run_java(cp: str, main: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["java", "--add-opens=java.base/java.nio=ALL-UNNAMED", "-cp", cp, main, *args], capture_output=True, text=True, timeout=timeout)
