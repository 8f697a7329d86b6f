"""A newcomer's path: build the package, install it into a fresh venv, run the quickstart.

The wheel is built by pip from a copy of the source tree (``pyproject.toml``, ``setup.py``,
``MANIFEST.in``, ``spark_ext/``, ``jvm_bridge/``; no ``build/``), as ``pip install .`` does:
in pip's isolated build environment, which gets setuptools, wheel and pyspark (the jar's
classpath; pip takes it from its wheel cache) from PyPI, and ``setup.py`` compiles the
jar into ``spark_ext/jars/``. So the test shows that ``pip install`` alone yields a
working jar: the installed package finds its own jar and a Spark SQL statement on a store
table runs, with no ``SPARK_EXT_JAR`` and no checkout ``build/`` in sight.

How the fresh environment gets its heavy runtime dependencies offline: the venv is
created without system site-packages and the spark-ext wheel is installed with
``--no-deps --no-index``; pyspark, pyarrow, pandas... (about 500 MB) are not copied but
made visible through a ``.pth`` file that appends this project's venv ``site-packages`` to
the fresh venv's ``sys.path``. A ``.pth`` entry comes *after* the fresh venv's own
site-packages, so ``spark_ext`` is imported from the installed wheel, never from the
checkout (checked below); and the main venv's editable-install hook is not run (``.pth``
files are only processed in site directories).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from spark_ext.spark.configure import JAR_NAME

REPO = Path(__file__).resolve().parents[2]


def quickstart_program() -> str:
    text = (REPO / "docs" / "quickstart.md").read_text()
    m = re.search(r"<!-- newcomer-program.*?-->\s*```python\n(.*?)```", text, re.S)
    assert m, "docs/quickstart.md lost its newcomer program"
    return m.group(1)


# Run after the quickstart, in the same process: which jar the session uses, and Spark SQL
# on the quickstart's store table (the catalog is a class of the jar).
AFTER_QUICKSTART = """
from spark_ext.spark.configure import default_jar
print("jar", default_jar())
rows = spark.sql("SELECT item, qty FROM store.shop.orders ORDER BY id").collect()
print("sql", [(r.item, r.qty) for r in rows])
"""


def source_copy(dst: Path) -> Path:
    """What ``pip install .`` reads from a checkout (no ``build/``, no caches)."""
    dst.mkdir()
    for f in ("pyproject.toml", "README.md", "setup.py", "MANIFEST.in"):
        shutil.copy(REPO / f, dst)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.class", "*.jar")
    shutil.copytree(REPO / "spark_ext", dst / "spark_ext", ignore=skip)
    shutil.copytree(REPO / "jvm_bridge", dst / "jvm_bridge", ignore=skip)
    return dst


def test_quickstart_is_five_lines() -> None:
    assert len(quickstart_program().strip().splitlines()) == 5


@pytest.mark.slow
def test_newcomer_wheel_fresh_venv_quickstart(tmp_path: Path) -> None:
    src = source_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    env_build = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_JARS", "SPARK_EXT_NO_JAR")}
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
                       capture_output=True, text=True, timeout=1200, env=env_build)
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = dist.glob("spark_ext-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert f"spark_ext/jars/{JAR_NAME}" in z.namelist()

    fresh = tmp_path / "fresh"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(fresh)], check=True, timeout=300)
    py = fresh / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    fresh_site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                capture_output=True, text=True, check=True).stdout.strip()
    (Path(fresh_site) / "_heavy_deps_from_main_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYSPARK_PYTHON", "SPARK_EXT_LOCATOR", "SPARK_CONF_DIR", "SPARK_EXT_JAR", "VIRTUAL_ENV")}
    env.update(SPARK_EXT_HOME=str(home), SPARK_LOCAL_IP="127.0.0.1", PATH=f"{fresh / 'bin'}:{env.get('PATH', '')}")
    work = tmp_path / "work"
    work.mkdir()
    try:
        where = subprocess.run([str(py), "-c", "import spark_ext; print(spark_ext.__file__)"], capture_output=True,
                               text=True, env=env, cwd=str(work), check=True).stdout.strip()
        assert where.startswith(fresh_site), where
        r = subprocess.run([str(fresh / "bin" / "spark-ext"), "--help"], capture_output=True, text=True, env=env,
                           cwd=str(work), timeout=60)
        assert r.returncode == 0 and "shell" in r.stdout
        r = subprocess.run([str(py), "-c", quickstart_program() + AFTER_QUICKSTART], capture_output=True, text=True,
                           env=env, cwd=str(work), timeout=600)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
        out = r.stdout.strip().splitlines()
        assert "{'id': 2, 'item': 'pear', 'qty': 6} 2" in out
        assert f"jar {Path(fresh_site) / 'spark_ext' / 'jars' / JAR_NAME}" in out
        assert out[-1] == "sql [('apple', 3), ('pear', 6)]"
    finally:
        run = home / "run" / "embedded.json"
        if run.exists():
            import json

            try:
                os.kill(int(json.loads(run.read_text())["pid"]), signal.SIGTERM)
            except (ProcessLookupError, ValueError, KeyError):
                pass


def _setup_module() -> object:
    """The checkout's setup.py as a module (its ``setup()`` call runs only as ``__main__``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("spark_ext_setup", REPO / "setup.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_jar_build_without_jdk_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No javac on PATH and no JAVA_HOME: the build stops with what to install, or how to opt out."""
    setup_py: object = _setup_module()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bash").symlink_to(shutil.which("bash") or "/bin/bash")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(setup_py.JarBuildError) as e:  # type: ignore[attr-defined]
        setup_py.build_jar(tmp_path / "out")  # type: ignore[attr-defined]
    msg = str(e.value)
    assert "needs a JDK 17 or newer (javac and jar" in msg and "openjdk-17-jdk-headless" in msg
    assert "SPARK_EXT_NO_JAR=1" in msg
    assert not (tmp_path / "out").exists()


def test_jar_build_bad_pyspark_jars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    setup_py: object = _setup_module()
    monkeypatch.setenv("PYSPARK_JARS", str(tmp_path / "nowhere"))
    with pytest.raises(setup_py.JarBuildError, match=r"PYSPARK_JARS=.*nowhere.* is not a folder"):  # type: ignore[attr-defined]
        setup_py.build_jar(tmp_path / "out")  # type: ignore[attr-defined]


@pytest.mark.slow
def test_wheel_without_jar_when_asked(tmp_path: Path) -> None:
    """SPARK_EXT_NO_JAR=1: a wheel without the jar (and no pyspark in the build environment)."""
    src = source_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    env = {**{k: v for k, v in os.environ.items() if k != "PYSPARK_JARS"}, "SPARK_EXT_NO_JAR": "1"}
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(dist), str(src)],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "building spark-ext WITHOUT its jar" in r.stdout + r.stderr
    assert "pyspark" not in _build_requirements_line(r.stdout + r.stderr)
    (wheel,) = dist.glob("spark_ext-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert not [n for n in z.namelist() if n.endswith(".jar")]
        assert "spark_ext/spark/configure.py" in z.namelist()


def _build_requirements_line(log: str) -> str:
    """pip -v's line naming the backend's extra requirements for the wheel (empty if none)."""
    return "\n".join(ln for ln in log.splitlines() if "Installing backend dependencies" in ln or "Collecting" in ln)
