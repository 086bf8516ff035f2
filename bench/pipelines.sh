#!/usr/bin/env bash
# Pipeline files against the Rust API on the same engine (issue 17): every
# workload of examples/workloads/ through `weir bench --pipeline FILE` and the
# same workload through `weir bench WORKLOAD`, in one run.
#
# usage: bench/pipelines.sh [--write]
#
# Builds weir in release, then for every workload and parallelism runs both,
# alternating, RUNS times each; both must emit the same number of rows
# (outputs=; the checksums differ by design: the Rust API's rows are typed
# tuples, the pipeline's are rows of values). Prints a markdown table of the
# medians: events per CPU-second of each and the Rust API's lead. With
# --write, regenerates the PIPELINES section of docs/benchmarks.md.
#
# Environment: WORKLOADS [orders-window orders-dedup orders-sliding q0 q1 q2 q5 q7],
# PARALLELISMS [1], EVENTS [10000000], RUNS [3]
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
WORKLOADS=${WORKLOADS:-orders-window orders-dedup orders-sliding q0 q1 q2 q5 q7}
PARALLELISMS=${PARALLELISMS:-1}
EVENTS=${EVENTS:-10000000}
RUNS=${RUNS:-3}
# shellcheck source=bench/doc-section.sh
. "$repo/bench/doc-section.sh"
write=$(write_flag "$@")

log() { echo "pipelines: $*" >&2; }

log "building weir (release)"
(cd "$repo" && cargo build -q --release -p weir-cli)
weir=$repo/target/release/weir

# bench_line PARALLELISM ARGS...: the report line of one run.
bench_line() {
  local line
  line=$("$weir" bench "${@:2}" --events "$EVENTS" --parallelism "$1" 2>/dev/null | grep -m1 '^query=') || {
    log "weir bench ${*:2} at p=$1 failed"
    exit 1
  }
  echo "$line"
}

rows=""
for w in $WORKLOADS; do
  for p in $PARALLELISMS; do
    api=() file=()
    for _ in $(seq "$RUNS"); do
      a=$(bench_line "$p" "$w")
      b=$(bench_line "$p" --pipeline "$repo/examples/workloads/$w.yaml")
      if [ "$(field outputs "$a")" != "$(field outputs "$b")" ]; then
        log "$w at p=$p: the row counts differ: $a / $b"
        exit 1
      fi
      api+=("$(line_per_cpu_s "$a")") file+=("$(line_per_cpu_s "$b")")
    done
    m_api=$(median "${api[@]}") m_file=$(median "${file[@]}")
    log "$w p=$p: Rust API $m_api, pipeline $m_file events per CPU-second"
    rows+="| $w | $p | $(mega "$m_file") | $(mega "$m_api") | $(ratio "$m_api" "$m_file")x |"$'\n'
  done
done

body=$(mktemp)
trap 'rm -f "$body"' EXIT
cat >"$body" <<DOC
## Pipeline files and the Rust API

\`bench/pipelines.sh\` ($(date -u +%Y-%m-%d), Weir commit \`$(git -C "$repo" rev-parse --short HEAD)\`, $EVENTS events,
median of $RUNS alternating runs, $(nproc) cores): each workload's pipeline file
(\`examples/workloads/WORKLOAD.yaml\`, through \`weir bench --pipeline\`: its rows to a checksum instead of its
sink, only the job timed) beside the same workload on the Rust API (\`weir bench WORKLOAD\`). Both emit the same rows.

| workload | p | pipeline events/CPU-s | Rust API events/CPU-s | Rust API / pipeline |
|---|---|---|---|---|
${rows}
DOC
cat "$body"
if [ "$write" = true ]; then
  write_section "$repo/docs/benchmarks.md" PIPELINES "$body"
  log "wrote docs/benchmarks.md"
fi
