#!/usr/bin/env bash
# Put the built jar and a minimal POM into the local Maven layout (default ~/.m2/repository),
# so `spark-submit --packages io.sparkext:spark-ext_2.13:0.1.0` resolves offline.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VERSION=0.1.0
REPO="${M2_REPO:-$HOME/.m2/repository}"
DIR="$REPO/io/sparkext/spark-ext_2.13/$VERSION"
JAR="$ROOT/build/spark-ext_2.13-$VERSION.jar"
[ -f "$JAR" ] || { echo "publish_local.sh: $JAR missing: run make jar" >&2; exit 1; }
mkdir -p "$DIR"
if ! cmp -s "$JAR" "$DIR/spark-ext_2.13-$VERSION.jar"; then
  cp "$JAR" "$DIR/spark-ext_2.13-$VERSION.jar"
  echo "published $DIR"
fi
cat > "$DIR/spark-ext_2.13-$VERSION.pom.tmp" <<POM
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.sparkext</groupId>
  <artifactId>spark-ext_2.13</artifactId>
  <version>$VERSION</version>
  <packaging>jar</packaging>
  <name>spark-ext</name>
  <description>Spark catalog and DSv2 tables over spark-ext store servers (dependencies come with Spark)</description>
</project>
POM
mv "$DIR/spark-ext_2.13-$VERSION.pom.tmp" "$DIR/spark-ext_2.13-$VERSION.pom"
