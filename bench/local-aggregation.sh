#!/usr/bin/env bash
# Two-phase (local-global) window aggregation against sending every record
# through the key exchange, and parallelism 2 against 1 (issue 17).
#
# usage: bench/local-aggregation.sh [--write]
#
# Builds weir in release, then for every workload and parallelism runs
# `weir bench` with the local phase (the default) and without it
# (`--no-local-aggregation`), alternating, RUNS times each; both must give the
# same rows (outputs= and checksum=). Prints a markdown table of the medians:
# events/s (wall) and per CPU-second for both, and each variant's p2/p1
# speed-up. With --write, regenerates the LOCAL-AGGREGATION section of
# docs/benchmarks.md.
#
# Environment: WORKLOADS [orders-window q5 q7 orders-sliding], EVENTS [10000000], RUNS [3]
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
WORKLOADS=${WORKLOADS:-orders-window q5 q7 orders-sliding}
EVENTS=${EVENTS:-10000000}
RUNS=${RUNS:-3}
# shellcheck source=bench/doc-section.sh
. "$repo/bench/doc-section.sh"
write=$(write_flag "$@")

log() { echo "local-aggregation: $*" >&2; }

log "building weir (release)"
(cd "$repo" && cargo build -q --release -p weir-cli)
weir=$repo/target/release/weir

# bench_line WORKLOAD PARALLELISM [FLAGS...]: the report line of one run.
bench_line() {
  local line
  line=$("$weir" bench "$1" --events "$EVENTS" --parallelism "$2" "${@:3}" 2>/dev/null | grep -m1 '^query=') || {
    log "$1 at p=$2 ${*:3} failed"
    exit 1
  }
  echo "$line"
}

rows=""
declare -A wall
for w in $WORKLOADS; do
  for p in 1 2; do
    local_wall=() local_cpu=() global_wall=() global_cpu=()
    for _ in $(seq "$RUNS"); do
      a=$(bench_line "$w" "$p")
      b=$(bench_line "$w" "$p" --no-local-aggregation)
      if [ "$(field outputs "$a") $(field checksum "$a")" != "$(field outputs "$b") $(field checksum "$b")" ]; then
        log "$w at p=$p: the answers differ: $a / $b"
        exit 1
      fi
      local_wall+=("$(field events_per_s "$a")") local_cpu+=("$(line_per_cpu_s "$a")")
      global_wall+=("$(field events_per_s "$b")") global_cpu+=("$(line_per_cpu_s "$b")")
    done
    wall[$w-$p-local]=$(median "${local_wall[@]}")
    wall[$w-$p-global]=$(median "${global_wall[@]}")
    log "$w p=$p: local ${wall[$w-$p-local]}/s, without ${wall[$w-$p-global]}/s"
    rows+="| $w | $p | $(mega "${wall[$w-$p-local]}") | $(mega "$(median "${local_cpu[@]}")") | $(mega "${wall[$w-$p-global]}") | $(mega "$(median "${global_cpu[@]}")") | $(ratio "${wall[$w-$p-local]}" "${wall[$w-$p-global]}") |"$'\n'
  done
done

speedups=""
for w in $WORKLOADS; do
  speedups+="| $w | $(ratio "${wall[$w-2-local]}" "${wall[$w-1-local]}") | $(ratio "${wall[$w-2-global]}" "${wall[$w-1-global]}") |"$'\n'
done

body=$(mktemp)
trap 'rm -f "$body"' EXIT
cat >"$body" <<DOC
## Two-phase window aggregation

\`bench/local-aggregation.sh\` ($(date -u +%Y-%m-%d), $EVENTS events, median of $RUNS alternating runs, \`weir bench\`,
$(nproc) cores): each workload with the local phase (the default: partials per key and pane cross the
key exchange) and without it (\`--no-local-aggregation\`: every record crosses). Both give the same rows.

| workload | parallelism | local: events/s | local: per CPU-s | without: events/s | without: per CPU-s | local / without (wall) |
|---|---|---|---|---|---|---|
${rows}
Parallelism 2 against 1 (events per second, wall):

| workload | local p2/p1 | without p2/p1 |
|---|---|---|
${speedups}
DOC
cat "$body"
if [ "$write" = true ]; then
  write_section "$repo/docs/benchmarks.md" LOCAL-AGGREGATION "$body"
  log "wrote docs/benchmarks.md"
fi
