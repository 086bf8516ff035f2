#!/usr/bin/env bash
# The Apache Flink baseline: runs one workload of bench/WORKLOADS.md on Flink's
# DataStream API in a local mini-cluster (bench/flink/FlinkBench.java).
#
# usage: bench/flink/run.sh QUERY EVENTS PARALLELISM [CHECKPOINT_MS] [--rate R] [--buffer-timeout-ms MS]
#                          [--state-backend hashmap|rocksdb [--state-dir DIR]]
#   QUERY: orders-window | orders-dedup | orders-sliding | orders-payments | q0 | q1 | q2 | q5 | q7
# prints one line on stdout:
#   query= events= parallelism= net_ms= cpu_ms= events_per_s= outputs= checksum=
# (with --rate, q1 only: also latency_p50_ms= latency_p99_ms=)
#
# Needs java and javac (17 or later) and python3 with pip. On first use it
# downloads Flink's jars (the PyPI wheel apache-flink-libraries, which bundles
# the Flink distribution) and compiles FlinkBench.java, both cached under
# $WEIR_FLINK_HOME [~/.cache/weir-flink]; a changed FlinkBench.java is
# recompiled. WEIR_FLINK_JAVA_OPTS [-Xmx4g] are the JVM's options.
# bench/compare.sh reads the Flink version from the next line.
version=2.3.0
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
home=${WEIR_FLINK_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/weir-flink}
lib=$home/flink-$version/lib
mkdir -p "$home"

if [ $# -lt 3 ]; then
  echo "usage: $0 QUERY EVENTS PARALLELISM [CHECKPOINT_MS] [--rate R] [--buffer-timeout-ms MS] [--state-backend hashmap|rocksdb [--state-dir DIR]]" >&2
  echo "  QUERY: orders-window | orders-dedup | orders-sliding | orders-payments | q0 | q1 | q2 | q5 | q7" >&2
  exit 2
fi

# Flink's jars: pyflink/lib/*.jar of the wheel, and nothing else of it.
if [ ! -f "$lib/flink-dist-$version.jar" ]; then
  echo "flink: fetching Apache Flink $version (apache-flink-libraries from PyPI) into $home" >&2
  tmp=$(mktemp -d "$home/fetch.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --dest "$tmp" "apache-flink-libraries==$version" >&2
  python3 - "$tmp" "$tmp/lib" <<'PY'
import glob, os, sys, zipfile
src, dest = sys.argv[1], sys.argv[2]
os.makedirs(dest)
(wheel,) = glob.glob(os.path.join(src, "apache_flink_libraries-*.whl"))
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("pyflink/lib/") and name.endswith(".jar"):
            with z.open(name) as f, open(os.path.join(dest, os.path.basename(name)), "wb") as out:
                out.write(f.read())
PY
  mkdir -p "$home/flink-$version"
  rm -rf "$lib" && mv "$tmp/lib" "$lib"
  rm -rf "$tmp"
  trap - EXIT
  [ -f "$lib/flink-dist-$version.jar" ] || { echo "flink: flink-dist-$version.jar is not in the wheel" >&2; exit 1; }
fi

# FlinkBench, compiled once per version of its source.
stamp=$( (cat "$here/FlinkBench.java"; echo "$version") | sha256sum | cut -c1-16)
classes=$home/classes-$stamp
if [ ! -f "$classes/FlinkBench.class" ]; then
  tmp=$(mktemp -d "$home/javac.XXXXXX")
  javac -nowarn -d "$tmp" -cp "$lib/*" "$here/FlinkBench.java" >&2 || { rm -rf "$tmp"; exit 1; }
  rm -rf "$classes" && mv "$tmp" "$classes"
  # Classes of older versions of FlinkBench.java are of no further use.
  find "$home" -maxdepth 1 -name 'classes-*' ! -name "classes-$stamp" -exec rm -rf {} +
fi

# Flink logs only errors, to stderr.
log4j=$home/log4j2.properties
[ -f "$log4j" ] || cat >"$log4j" <<'PROPS'
rootLogger.level = ERROR
rootLogger.appenderRef.console.ref = console
appender.console.name = console
appender.console.type = Console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %-5p %c{1}: %m%n
PROPS

# shellcheck disable=SC2086 # WEIR_FLINK_JAVA_OPTS is a list of options
exec java ${WEIR_FLINK_JAVA_OPTS:--Xmx4g} -Dlog4j.configurationFile="$log4j" \
  -cp "$lib/*:$classes" FlinkBench "$@"
