#!/usr/bin/env bash
# Build the spark-ext JVM bridge without Maven: javac against pyspark's own jars.
#   build/classes                 compiled main classes
#   build/test-classes            compiled Java checks (run by tests/jvm/, not shipped)
#   build/spark-ext_2.13-0.1.0.jar  classes + the spark_ext Python package at the jar root
# Quiet and quick when nothing changed. Usage: jvm_bridge/build.sh [--force]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
VERSION=0.1.0
JAR="build/spark-ext_2.13-${VERSION}.jar"
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

# One build at a time (parallel test sessions call this script too).
mkdir -p build
exec 9>build/.build.lock
flock 9

SOURCES=(jvm_bridge/src/main jvm_bridge/src/test/java spark_ext jvm_bridge/build.sh)
if [ "${1:-}" != "--force" ] && [ -f "$JAR" ] && \
   [ -z "$(find "${SOURCES[@]}" -newer "$JAR" \( -name '*.java' -o -name '*.py' -o -name '*.sh' -o -name '*.json' -o -path '*/resources/*' \) -print -quit)" ]; then
  exit 0
fi

CP="$PYSPARK_JARS/*"
rm -rf build/classes build/test-classes build/pystage
mkdir -p build/classes build/test-classes build/pystage
find jvm_bridge/src/main/java -name '*.java' > build/main-sources.txt
javac --release 17 -nowarn -Xlint:none -encoding UTF-8 -cp "$CP" -d build/classes @build/main-sources.txt 2> build/javac.log || { cat build/javac.log >&2; exit 1; }
find jvm_bridge/src/test/java -name '*.java' > build/test-sources.txt
if [ -s build/test-sources.txt ]; then
  javac --release 17 -nowarn -Xlint:none -encoding UTF-8 -cp "build/classes:$CP" -d build/test-classes @build/test-sources.txt 2> build/javac-test.log || { cat build/javac-test.log >&2; exit 1; }
fi
cp -R jvm_bridge/src/main/resources/. build/classes/
# The Python package rides along at the jar root (without caches).
tar -C "$ROOT" --exclude='__pycache__' --exclude='*.pyc' -cf - spark_ext | tar -C build/pystage -xf -
mkdir -p build/classes/META-INF
printf 'Manifest-Version: 1.0\nImplementation-Title: spark-ext\nImplementation-Version: %s\n' "$VERSION" > build/manifest.txt
rm -f "$JAR.tmp"
jar cfm "$JAR.tmp" build/manifest.txt -C build/classes . -C build/pystage spark_ext
mv "$JAR.tmp" "$JAR"
echo "built $JAR"
