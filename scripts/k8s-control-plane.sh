#!/usr/bin/env bash
# Builds the real Kubernetes control plane the end-to-end tests run against
# (TESTING.md, "Kubernetes"): kube-apiserver, kube-controller-manager and the
# kubectl the e2e drives them with, 1.20.2 from Debian's source package, and
# etcd from Debian. Idempotent and cached: the binaries go to $CACHE/k8s/bin
# and are not built again.
#
#   bash scripts/k8s-control-plane.sh      # prints the bin directory
#
# About 14 minutes of compilation on 2 cores the first time.
set -euo pipefail

CACHE="${WEIR_TEST_CACHE:-$HOME/.cache/weir-test}"
K8S="$CACHE/k8s"
BIN="$K8S/bin"
log() { printf 'k8s-control-plane: %s\n' "$*" >&2; }

WHATS=(kube-apiserver kube-controller-manager kubectl)
cached=1
for what in "${WHATS[@]}"; do [ -x "$BIN/$what" ] || cached=0; done
if [ "$cached" = 1 ] && command -v etcd >/dev/null; then
  log "cached in $BIN"
  echo "$BIN"
  exit 0
fi

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_install() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null; }

# Go, rsync (the build scripts use it), etcd, and reflect2 v1.0.2 (v1.0.1, vendored by
# Kubernetes 1.20, crashes under Go 1.19 on the first custom-resource create).
if ! command -v go >/dev/null || ! command -v rsync >/dev/null || ! command -v etcd >/dev/null \
   || [ ! -d /usr/share/gocode/src/github.com/modern-go/reflect2 ]; then
  log "installing golang-go rsync etcd-server golang-github-modern-go-reflect2-dev"
  apt_install golang-go rsync etcd-server golang-github-modern-go-reflect2-dev \
    || { $SUDO apt-get update >/dev/null; apt_install golang-go rsync etcd-server golang-github-modern-go-reflect2-dev; }
fi

mkdir -p "$K8S/src"
cd "$K8S/src"
if ! ls kubernetes_*.orig.tar.gz >/dev/null 2>&1; then
  log "fetching Debian's kubernetes source package"
  if ! grep -rqs "deb-src" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      | $SUDO tee /etc/apt/sources.list.d/weir-deb-src.sources >/dev/null
    $SUDO apt-get update >/dev/null
  fi
  apt-get source --download-only kubernetes >/dev/null
fi
tarball=$(ls kubernetes_*.orig.tar.gz | head -1)
if [ ! -d tree ]; then
  log "unpacking $tarball"
  mkdir -p tree.tmp
  tar -xzf "$tarball" -C tree.tmp --strip-components=1
  rm -rf tree.tmp/vendor/github.com/modern-go/reflect2
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 tree.tmp/vendor/github.com/modern-go/reflect2
  mv tree.tmp tree
fi
cd tree
cat >version.env <<'VERSION'
KUBE_GIT_VERSION='v1.20.2'
KUBE_GIT_MAJOR='1'
KUBE_GIT_MINOR='20'
KUBE_GIT_TREE_STATE='clean'
KUBE_GIT_COMMIT='faecb196815e248d3ecfb03c680a4507229c2a56'
VERSION
for what in "${WHATS[@]}"; do
  if [ ! -x "$BIN/$what" ]; then
    log "building $what (several minutes)"
    KUBE_GIT_VERSION_FILE=version.env GOFLAGS= GOPROXY=off make WHAT="cmd/$what" >"$K8S/build-$what.log" 2>&1 \
      || { tail -30 "$K8S/build-$what.log" >&2; exit 1; }
    mkdir -p "$BIN"
    cp "$(find _output -type f -name "$what" | head -1)" "$BIN/$what"
  fi
done
log "built into $BIN"
echo "$BIN"
