#!/usr/bin/env bash
# Installs the servers Weir's tests start on loopback, once per machine.
#
# Idempotent and cached: everything goes under ${WEIR_TEST_CACHE:-~/.cache/weir-test}
# and nothing is installed again when it is already there, so test.sh can call
# this on every run.
#
#   bash scripts/test-deps.sh
#
# Installs:
#   redis-server, postgresql  (apt-get) for the connector tests.
#   chromium     (apt-get) for the dashboard test, headless.
#   prometheus   Debian's package from trixie (2.53: bookworm's 2.42 is built
#                without Kubernetes service discovery), unpacked into
#                $CACHE/prometheus, for the e2e's monitoring steps (monitoring/).
#   moto_server  (PyPI moto[server]) in $CACHE/venv: an in-memory S3-compatible
#                server for the weir-s3 tests (runtime/storage-s3/tests). The tests
#                find it there, or at $WEIR_MOTO_SERVER.
#   helm-python-sdk, kubernetes-validate, PyYAML (PyPI) in $CACHE/venv: the real
#                Helm engine and Kubernetes' schemas for charts/test_chart.py.
#
# Needs: python3 with the venv module (Debian: python3-venv).
set -euo pipefail

CACHE="${WEIR_TEST_CACHE:-$HOME/.cache/weir-test}"
VENV="$CACHE/venv"
# The version the tests were written against (5.2.5, November 2026).
MOTO_REQUIREMENT='moto[server]==5.2.5'

log() { printf 'test-deps: %s\n' "$*" >&2; }

command -v python3 >/dev/null || { log "python3 is required (apt-get install python3 python3-venv)"; exit 1; }

if [ -x "$VENV/bin/moto_server" ]; then
  log "moto_server already installed at $VENV/bin/moto_server"
else
  mkdir -p "$CACHE"
  if [ ! -x "$VENV/bin/pip" ]; then
    log "creating a virtualenv at $VENV"
    python3 -m venv "$VENV" || { log "python3 -m venv failed (Debian: apt-get install python3-venv)"; exit 1; }
  fi
  log "installing $MOTO_REQUIREMENT into $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$MOTO_REQUIREMENT"
  [ -x "$VENV/bin/moto_server" ] || { log "pip finished but $VENV/bin/moto_server is missing"; exit 1; }
  log "installed moto $("$VENV/bin/python" -c 'import moto; print(moto.__version__)') at $VENV/bin/moto_server"
fi

# The Helm engine (Helm's Go SDK through its C ABI, no helm binary) and the
# schemas the rendered chart is validated against, both offline.
CHART_REQUIREMENTS=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 PyYAML==6.0.3)
if "$VENV/bin/python" -c 'import helm_python, kubernetes_validate, yaml' 2>/dev/null; then
  log "helm-python-sdk and kubernetes-validate already installed"
else
  log "installing ${CHART_REQUIREMENTS[*]} into $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${CHART_REQUIREMENTS[@]}"
fi

# Redis and PostgreSQL servers from Debian, for the connector tests
# (runtime/cli/tests/kafka_connectors.rs); the tests start their own instances
# on loopback ports. The Kafka tests need nothing installed: librdkafka's mock
# cluster is compiled into the tests.
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -eq 0 ]; then
  log "redis-server, postgresql and chromium already installed"
else
  log "installing ${missing[*]} (apt-get)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null \
    || { $SUDO apt-get update >/dev/null && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; } \
    || { log "apt-get install ${missing[*]} failed"; exit 1; }
fi
# The Debian package starts a cluster of its own; the tests do not use it.

# Prometheus with Kubernetes service discovery: Debian bookworm's package is
# built without it (its NEWS: "Kubernetes support has been completely
# removed"); trixie's re-enables it and runs on bookworm (it needs libc6 >=
# 2.34). Taken from Debian's archive, checked against the archive's index, and
# unpacked (not installed) under the cache.
PROM="$CACHE/prometheus"
if [ -x "$PROM/usr/bin/prometheus" ]; then
  log "prometheus already unpacked at $PROM/usr/bin/prometheus"
else
  command -v curl >/dev/null && command -v xz >/dev/null && command -v dpkg-deb >/dev/null \
    || { log "curl, xz and dpkg-deb are needed to fetch Prometheus"; exit 1; }
  mirror="${WEIR_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
  log "fetching Debian trixie's prometheus package from $mirror"
  tmp=$(mktemp -d)
  curl -sSf "$mirror/dists/trixie/main/binary-amd64/Packages.xz" -o "$tmp/Packages.xz"
  read -r file sha < <(xz -dc "$tmp/Packages.xz" | awk '/^Package: /{p = ($2 == "prometheus")} p && /^Filename: /{f = $2} p && /^SHA256: /{print f, $2; exit}')
  [ -n "${file:-}" ] || { log "no prometheus package in trixie's index"; exit 1; }
  curl -sSf "$mirror/$file" -o "$tmp/prometheus.deb"
  echo "$sha  $tmp/prometheus.deb" | sha256sum -c --quiet - || { log "$file does not match the archive's SHA256"; exit 1; }
  rm -rf "$PROM.tmp" && dpkg-deb -x "$tmp/prometheus.deb" "$PROM.tmp" && mv "$PROM.tmp" "$PROM"
  rm -rf "$tmp"
  log "unpacked $("$PROM/usr/bin/prometheus" --version 2>&1 | head -1) at $PROM/usr/bin/prometheus"
fi
