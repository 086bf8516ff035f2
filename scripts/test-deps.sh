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
