"""Builds the spark-ext jar into the wheel (everything else is in pyproject.toml).

``build_py`` runs ``jvm_bridge/build.sh`` (``javac`` against pyspark's own jars, the
``spark_ext`` package at the jar root) in a temporary folder and puts the jar at
``spark_ext/jars/spark-ext_2.13-0.1.0.jar`` of the build, where
``spark_ext.spark.configure.default_jar()`` finds it after ``pip install``.

Without a JDK the build fails with a message saying what to install; ``SPARK_EXT_NO_JAR=1``
builds a wheel without the jar on purpose (the Python features work, Spark SQL on store
tables stays off, and ``configure()`` warns at every session). Editable installs skip the
jar: a checkout uses ``build/`` from ``make jar``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
JAR_NAME = "spark-ext_2.13-0.1.0.jar"
NO_JAR = "SPARK_EXT_NO_JAR"


class JarBuildError(Exception):
    """The jar cannot be built; the message says why and what to do."""


def _java_bin() -> str | None:
    """The folder holding javac and jar: $JAVA_HOME/bin, else the PATH's."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "javac").is_file():
        return str(Path(java_home) / "bin")
    javac = shutil.which("javac")
    return str(Path(javac).resolve().parent) if javac else None


def _pyspark_jars() -> str:
    given = os.environ.get("PYSPARK_JARS")
    if given:
        if not Path(given).is_dir():
            raise JarBuildError(f"PYSPARK_JARS={given!r} is not a folder (expected pyspark's jars/ folder)")
        return given
    try:
        import pyspark
    except ImportError:
        raise JarBuildError(
            "pyspark is not importable in the build environment (its jars are the compile classpath): "
            "build with pip (build isolation installs it), or set PYSPARK_JARS to pyspark's jars/ folder") from None
    jars = Path(pyspark.__file__).resolve().parent / "jars"
    if not jars.is_dir():
        raise JarBuildError(f"pyspark at {pyspark.__file__} has no jars/ folder")
    return str(jars)


def build_jar(dest: Path) -> Path:
    """Compile the bridge into ``dest/<jar>``. Raises JarBuildError with what to do."""
    java_bin = _java_bin()
    if java_bin is None or not (Path(java_bin) / "jar").is_file():
        raise JarBuildError(
            "building spark-ext needs a JDK 17 or newer (javac and jar, on PATH or in $JAVA_HOME/bin) to compile "
            "its Spark bridge; none was found. Install one (Debian/Ubuntu: apt-get install openjdk-17-jdk-headless), "
            f"or set {NO_JAR}=1 to install without the jar (Spark SQL on store tables then stays off)")
    env = {**os.environ, "PYSPARK_JARS": _pyspark_jars(), "PATH": f"{java_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    with tempfile.TemporaryDirectory(prefix="spark-ext-jar-") as tmp:
        env["SPARK_EXT_BUILD_DIR"] = tmp
        r = subprocess.run(["bash", str(ROOT / "jvm_bridge" / "build.sh"), "--force"], cwd=str(ROOT), env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise JarBuildError(f"jvm_bridge/build.sh failed (exit {r.returncode}):\n{r.stdout}{r.stderr}")
        dest.mkdir(parents=True, exist_ok=True)
        out = dest / JAR_NAME
        shutil.copyfile(Path(tmp) / JAR_NAME, out)
    return out


class BuildPyWithJar(build_py):
    """``build_py`` that also puts the jar into the package (not for editable installs)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        if os.environ.get(NO_JAR, "") not in ("", "0"):
            shutil.rmtree(Path(self.build_lib) / "spark_ext" / "jars", ignore_errors=True)  # an earlier build's
            self.warn(f"{NO_JAR} is set: building spark-ext WITHOUT its jar; Spark SQL on store tables will be off")
            return
        try:
            jar = build_jar(Path(self.build_lib) / "spark_ext" / "jars")
        except JarBuildError as e:
            sys.stderr.write(f"\nerror: spark-ext: {e}\n\n")
            raise SystemExit(1) from None
        self.announce(f"built {jar}", level=2)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False) and os.environ.get(NO_JAR, "") in ("", "0"):
            outs.append(str(Path(self.build_lib) / "spark_ext" / "jars" / JAR_NAME))
        return outs


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import build_jar()
    setup(cmdclass={"build_py": BuildPyWithJar})
