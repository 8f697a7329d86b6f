#!/usr/bin/env bash
# Build the spark-ext JVM bridge without Maven: javac against pyspark's own jars.
#   $OUT/classes                 compiled main classes
#   $OUT/test-classes            compiled Java checks (run by tests/jvm/, not shipped)
#   $OUT/spark-ext_2.13-0.1.0.jar  classes + the spark_ext Python package at the jar root
# OUT is build/ (SPARK_EXT_BUILD_DIR overrides it: setup.py builds the wheel's jar in a
# temporary folder). Callers: `make jar` and setup.py (`pip install .`).
# Quiet and quick when nothing changed. Usage: jvm_bridge/build.sh [--force]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
VERSION=0.1.0
OUT="${SPARK_EXT_BUILD_DIR:-build}"
JAR="$OUT/spark-ext_2.13-${VERSION}.jar"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3

if [ -z "${PYSPARK_JARS:-}" ]; then
  PYSPARK_JARS="$(ls -d "$ROOT"/.venv/lib/python3*/site-packages/pyspark/jars 2>/dev/null | head -n1 || true)"
  if [ -z "$PYSPARK_JARS" ]; then
    PYSPARK_JARS="$("$PY" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')"
  fi
fi
[ -d "$PYSPARK_JARS" ] || { echo "build.sh: pyspark jars not found (set PYSPARK_JARS)" >&2; exit 1; }
command -v javac >/dev/null || { echo "build.sh: javac not found: install a JDK 17" >&2; exit 1; }
command -v jar >/dev/null || { echo "build.sh: jar (the JDK's archiver) not found: install a JDK 17" >&2; exit 1; }

# One build at a time (parallel test sessions call this script too).
mkdir -p "$OUT"
exec 9>"$OUT/.build.lock"
flock 9

SOURCES=(jvm_bridge/src/main spark_ext jvm_bridge/build.sh)
[ -d jvm_bridge/src/test/java ] && SOURCES+=(jvm_bridge/src/test/java)
if [ "${1:-}" != "--force" ] && [ -f "$JAR" ] && \
   [ -z "$(find "${SOURCES[@]}" -newer "$JAR" \( -name '*.java' -o -name '*.py' -o -name '*.sh' -o -name '*.json' -o -path '*/resources/*' \) -print -quit)" ]; then
  exit 0
fi

CP="$PYSPARK_JARS/*"
rm -rf "$OUT/classes" "$OUT/test-classes" "$OUT/pystage"
mkdir -p "$OUT/classes" "$OUT/test-classes" "$OUT/pystage"
find jvm_bridge/src/main/java -name '*.java' > "$OUT/main-sources.txt"
javac --release 17 -nowarn -Xlint:none -encoding UTF-8 -cp "$CP" -d "$OUT/classes" @"$OUT/main-sources.txt" 2> "$OUT/javac.log" || { cat "$OUT/javac.log" >&2; exit 1; }
if [ -d jvm_bridge/src/test/java ]; then
  find jvm_bridge/src/test/java -name '*.java' > "$OUT/test-sources.txt"
  if [ -s "$OUT/test-sources.txt" ]; then
    javac --release 17 -nowarn -Xlint:none -encoding UTF-8 -cp "$OUT/classes:$CP" -d "$OUT/test-classes" @"$OUT/test-sources.txt" 2> "$OUT/javac-test.log" || { cat "$OUT/javac-test.log" >&2; exit 1; }
  fi
fi
cp -R jvm_bridge/src/main/resources/. "$OUT/classes/"
# The Python package rides along at the jar root (without caches, and without a packaged
# jar of an earlier install, which would nest the jar in itself).
tar -C "$ROOT" --exclude='__pycache__' --exclude='*.pyc' --exclude='spark_ext/jars' -cf - spark_ext | tar -C "$OUT/pystage" -xf -
mkdir -p "$OUT/classes/META-INF"
printf 'Manifest-Version: 1.0\nImplementation-Title: spark-ext\nImplementation-Version: %s\n' "$VERSION" > "$OUT/manifest.txt"
rm -f "$JAR.tmp"
jar cfm "$JAR.tmp" "$OUT/manifest.txt" -C "$OUT/classes" . -C "$OUT/pystage" spark_ext
mv "$JAR.tmp" "$JAR"
echo "built $JAR"
