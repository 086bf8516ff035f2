#!/usr/bin/env bash
# Latency of q1 (per record) in Weir and Apache Flink, in one run (issue 17).
#
# usage: bench/latency.sh [--write]
#
# Builds weir in release, measures each engine's capacity on q1 (bids as fast
# as they come, one rebalance before the sink, as the latency runs have), then
# runs q1 with the bids held to a rate and reports the rows' p50 and p99
# latency from the bid's release at the source to the row's arrival at the sink
# (in process: `weir bench q1 --rate R`, bench/flink/run.sh q1 ... --rate R):
#   - each engine at half its own capacity, with its default buffer timeout
#     (Weir 5 ms, Flink 100 ms) and with a buffer timeout of 0;
#   - both at COMMON_RATE, the same load for both.
# Every run lasts about SECONDS_PER_RUN seconds and must match the other
# engine's answer for the same event count. With --write, regenerates the
# LATENCY section of docs/benchmarks.md.
#
# Environment: PARALLELISM [1], SECONDS_PER_RUN [5], COMMON_RATE [500000]
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
PARALLELISM=${PARALLELISM:-1}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
COMMON_RATE=${COMMON_RATE:-500000}
# shellcheck source=bench/doc-section.sh
. "$repo/bench/doc-section.sh"
write=$(write_flag "$@")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

log() { echo "latency: $*" >&2; }
mega() { awk -v x="$1" 'BEGIN { printf "%.2f M", x / 1e6 }'; }

log "building weir (release)"
(cd "$repo" && cargo build -q --release -p weir-cli)
weir=$repo/target/release/weir

# run NAME CMD...: the command's report line.
run() {
  local name=$1
  shift
  "$@" >"$work/$name.out" 2>"$work/$name.err" || {
    log "$name failed:"
    tail -20 "$work/$name.err" >&2
    exit 1
  }
  grep -m1 '^query=' "$work/$name.out"
}
weir_q1() { run "weir-$1" "$weir" bench q1 --parallelism "$PARALLELISM" --events "$2" "${@:3}"; }
flink_q1() { run "flink-$1" "$repo/bench/flink/run.sh" q1 "$2" "$PARALLELISM" "${@:3}"; }

# Capacity: the stamped path at a rate far above what either engine reaches.
log "capacity"
weir_capacity=$(field events_per_s "$(weir_q1 capacity 20000000 --rate 1e12)")
flink_capacity=$(field events_per_s "$(flink_q1 capacity 5000000 --rate 1e12)")
log "capacity: weir $weir_capacity events/s, flink $flink_capacity events/s"

rows=""
# measure LABEL ENGINE RATE [BUFFER_TIMEOUT_MS]: one table row, checked against the other engine's oracle.
measure() {
  local label=$1 engine=$2 rate=$3 timeout=${4:-}
  local events line
  events=$(awk -v r="$rate" -v s="$SECONDS_PER_RUN" 'BEGIN { printf "%.0f", r * s }')
  local args=(--rate "$rate")
  case $engine in
    weir) [ -n "$timeout" ] && args+=(--buffer-timeout "${timeout}ms")
      line=$(weir_q1 "$label" "$events" "${args[@]}") ;;
    flink) [ -n "$timeout" ] && args+=(--buffer-timeout-ms "$timeout")
      line=$(flink_q1 "$label" "$events" "${args[@]}") ;;
  esac
  local expected
  expected=$(run "oracle-$label" "$weir" bench q1 --parallelism 1 --events "$events")
  if [ "$(field outputs "$line") $(field checksum "$line")" != "$(field outputs "$expected") $(field checksum "$expected")" ]; then
    log "$label: the answer differs from the unpaced run's: $line"
    exit 1
  fi
  local achieved
  achieved=$(field events_per_s "$line")
  log "$label: $line"
  rows+="| $label | $(mega "$rate") | $(mega "$achieved") | ${timeout:-default} | $(field latency_p50_ms "$line") | $(field latency_p99_ms "$line") |"$'\n'
}

weir_half=$(awk -v c="$weir_capacity" 'BEGIN { printf "%.0f", c / 2 }')
flink_half=$(awk -v c="$flink_capacity" 'BEGIN { printf "%.0f", c / 2 }')
measure "Weir, half its capacity" weir "$weir_half"
measure "Weir, half its capacity, timeout 0" weir "$weir_half" 0
measure "Flink, half its capacity" flink "$flink_half"
measure "Flink, half its capacity, timeout 0" flink "$flink_half" 0
measure "Weir, common rate" weir "$COMMON_RATE"
measure "Flink, common rate" flink "$COMMON_RATE"
measure "Flink, common rate, timeout 0" flink "$COMMON_RATE" 0

body="$work/section.md"
cat >"$body" <<MD
## Latency: q1 per record

\`bench/latency.sh\` ($(date -u +%Y-%m-%d), parallelism $PARALLELISM, about $SECONDS_PER_RUN s per run). A bid is stamped
as the source lets it go (paced to the rate), mapped to its q1 row and sent through one rebalance to the
sink, which takes the row's latency; both engines in one process each, so one clock. Capacity on this
path: Weir $(mega "$weir_capacity") events/s, Flink $(mega "$flink_capacity") events/s. "default" is each
engine's default buffer timeout: Weir 5 ms, Flink 100 ms.

| run | rate (events/s) | achieved | buffer timeout (ms) | p50 (ms) | p99 (ms) |
|---|---|---|---|---|---|
$rows
"achieved" is the events over the job's net run time, which for Flink includes the job's start. Every
run's answer equals the unpaced run's over the same events. The target of issue 17 is a p99 of at most
10 ms at half the job's capacity.
MD
cat "$body"
$write && write_section "$repo/docs/benchmarks.md" LATENCY "$body"
exit 0
