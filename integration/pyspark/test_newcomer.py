"""A newcomer's path: build the package, install it into a fresh venv, run the quickstart.

How the fresh environment gets its heavy dependencies offline: the venv is created
without system site-packages and the spark-ext wheel is installed with ``--no-deps
--no-index`` (nothing is downloaded for it); pyspark, pyarrow, pandas... (about 500 MB)
are not copied but made visible through a ``.pth`` file that appends this project's venv
``site-packages`` to the fresh venv's ``sys.path``. A ``.pth`` entry comes *after* the
fresh venv's own site-packages, so ``spark_ext`` is imported from the installed wheel,
never from the checkout (checked below); and the main venv's editable-install hook is
not run (``.pth`` files are only processed in site directories).

Building the wheel needs ``setuptools`` and ``wheel``: pip's isolated build gets them from
PyPI (reachable on these machines); the build runs on a copy of the sources so the
checkout's ``build/`` stays untouched.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def quickstart_program() -> str:
    text = (REPO / "docs" / "quickstart.md").read_text()
    m = re.search(r"<!-- newcomer-program.*?-->\s*```python\n(.*?)```", text, re.S)
    assert m, "docs/quickstart.md lost its newcomer program"
    return m.group(1)


def test_quickstart_is_five_lines() -> None:
    assert len(quickstart_program().strip().splitlines()) == 5


@pytest.mark.slow
def test_newcomer_wheel_fresh_venv_quickstart(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(REPO / "pyproject.toml", src)
    shutil.copy(REPO / "README.md", src)
    shutil.copytree(REPO / "spark_ext", src / "spark_ext", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = dist.glob("spark_ext-*.whl")

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
        r = subprocess.run([str(py), "-c", quickstart_program()], capture_output=True, text=True, env=env,
                           cwd=str(work), timeout=600)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
        assert r.stdout.strip().splitlines()[-1] == "{'id': 2, 'item': 'pear', 'qty': 6} 2"
    finally:
        run = home / "run" / "embedded.json"
        if run.exists():
            import json

            try:
                os.kill(int(json.loads(run.read_text())["pid"]), signal.SIGTERM)
            except (ProcessLookupError, ValueError, KeyError):
                pass
