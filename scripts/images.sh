#!/usr/bin/env bash
# Builds Weir's images from the repository's Dockerfile without a Docker
# daemon (TESTING.md, "Container images"), and exports them as OCI layouts
# for e2e/node_agent.py to run with runc.
#
#   bash scripts/images.sh [--e2e] BIN_DIR TAG OUT
#
# BIN_DIR holds weir, weir-operator and rust-job built by this machine's
# cargo (no Rust image can be pulled here: the Dockerfile's `prebuilt` stage
# copies them, stripped, from target/image-bin). The images are
# weir:TAG, weir-operator:TAG and order-monitor-rust:TAG; with --e2e also the
# e2e's kafka:TAG and redis:TAG (e2e/Dockerfile; BIN_DIR/examples/mock_broker,
# from `cargo build -p weir-kafka --features testing --example mock_broker`).
# OUT/REPOSITORY is each one's OCI layout, holding TAG. Prints each image's
# size.
#
# The base: the Dockerfile says `FROM debian:bookworm-slim`, which is made
# here from Debian's packages (debootstrap --variant=minbase, then trimmed of
# documentation, manuals, locales and apt's lists), tagged with that name in
# buildah's store, and built once: the store is cached under
# ${WEIR_TEST_CACHE:-~/.cache/weir-test}/images, and so are the Dockerfile's
# layers (`--layers`), so a second build only copies the new binaries in.
# buildah runs with the vfs storage driver and chroot isolation, which need
# neither overlay mounts nor user namespaces.
set -euo pipefail

e2e=0
[ "${1:-}" = --e2e ] && { e2e=1; shift; }
[ $# -eq 3 ] || { echo "usage: scripts/images.sh [--e2e] BIN_DIR TAG OUT" >&2; exit 2; }
bin_dir=$1 tag=$2 out=$3
repo=$(cd "$(dirname "$0")/.." && pwd)
CACHE="${WEIR_TEST_CACHE:-$HOME/.cache/weir-test}"
store="$CACHE/images"
log() { printf 'images: %s\n' "$*" >&2; }
export STORAGE_DRIVER=vfs
bah() { buildah --storage-driver vfs --root "$store/storage" --runroot "$store/run" "$@"; }

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
missing=()
for tool in debootstrap buildah runc umoci; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} (apt-get)"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null \
    || { $SUDO apt-get update >/dev/null && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
fi

base=docker.io/library/debian:bookworm-slim
if ! bah inspect --type image "$base" >/dev/null 2>&1; then
  rootfs="$store/rootfs"
  rm -rf "$rootfs"
  log "making the base image from Debian bookworm's packages (debootstrap --variant=minbase)"
  debootstrap --variant=minbase bookworm "$rootfs" "${WEIR_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$store/debootstrap.log" 2>&1 \
    || { tail -20 "$store/debootstrap.log" >&2; exit 1; }
  # What a container never reads (bookworm-slim drops the same).
  rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/log/*
  # And apt keeps no package caches in images built on it (as Debian's official images configure it).
  printf 'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\nDPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb || true"; };\n' \
    >"$rootfs/etc/apt/apt.conf.d/docker-clean"
  c=$(bah from scratch)
  bah copy "$c" "$rootfs" / >/dev/null
  bah config --cmd /bin/bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
  bah commit --quiet --rm "$c" "$base" >/dev/null
  rm -rf "$rootfs"
  log "base image $base: $(bah images --format '{{.Size}}' "$base")"
fi

# The binaries the Dockerfile's `prebuilt` stage copies: stripped, like the
# `build` stage's.
# REPOSITORY:TARGET:DOCKERFILE of each image, and the binaries they copy.
images=(weir:weir:Dockerfile weir-operator:operator:Dockerfile order-monitor-rust:rust-job:Dockerfile)
binaries=(weir weir-operator rust-job)
if [ "$e2e" = 1 ]; then
  images+=(kafka:kafka:e2e/Dockerfile redis:redis:e2e/Dockerfile)
  binaries+=(examples/mock_broker)
fi
mkdir -p "$repo/target/image-bin"
for b in "${binaries[@]}"; do
  [ -x "$bin_dir/$b" ] || { log "$bin_dir/$b is missing (cargo build -p weir-cli -p weir-operator -p rust-job)"; exit 1; }
  name=$(basename "$b")
  strip -o "$repo/target/image-bin/$name.tmp" "$bin_dir/$b" && mv "$repo/target/image-bin/$name.tmp" "$repo/target/image-bin/$name"
done

mkdir -p "$out"
for image in "${images[@]}"; do
  IFS=: read -r name target dockerfile <<<"$image"
  bah bud --quiet --pull=never --isolation chroot --layers --build-arg BINARIES=prebuilt \
    --target "$target" -t "$name:$tag" -f "$repo/$dockerfile" "$repo" >"$store/build-$name.log" 2>&1 \
    || { tail -20 "$store/build-$name.log" >&2; exit 1; }
  rm -rf "${out:?}/$name"
  bah push --quiet "$name:$tag" "oci:$out/$name:$tag" >/dev/null
  echo "$name:$tag $(bah images --format '{{.Size}}' "localhost/$name:$tag")"
done
# What the builds leave behind: working containers (buildah 1.28 keeps those
# of `COPY --from`) and the layers of earlier builds that no tag names.
bah rm --all >/dev/null 2>&1 || true
bah rmi --prune >/dev/null 2>&1 || true
