#!/usr/bin/env bash
# Latency of q1 (per record) and of orders-window (per window, from the
# watermark that fires it) in Weir and Apache Flink, in one run (issue 17).
#
# usage: bench/latency.sh [--write]
#
# Builds weir in release; for each query, measures each engine's capacity on
# the timed path (events as fast as they come), then runs the query with its
# events held to a rate and reports the rows' p50 and p99 latency (in process:
# `weir bench QUERY --rate R`, bench/flink/run.sh QUERY ... --rate R): for q1
# from the bid's release at the source to the row's arrival at the sink, one
# rebalance away; for orders-window from the source's emission of the
# watermark that fires a window to its row's arrival at the sink:
#   - each engine at half its own capacity, with its default buffer timeout
#     (Weir 5 ms, Flink 100 ms) and with a buffer timeout of 0;
#   - both at COMMON_RATE, the same load for both.
# Every run lasts about SECONDS_PER_RUN seconds and must match the other
# unpaced answer for the same event count. With --write, regenerates the
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
weir_bench() { run "weir-$1" "$weir" bench "$query" --parallelism "$PARALLELISM" --events "$2" "${@:3}"; }
flink_bench() { run "flink-$1" "$repo/bench/flink/run.sh" "$query" "$2" "$PARALLELISM" "${@:3}"; }

# measure LABEL ENGINE RATE [BUFFER_TIMEOUT_MS]: one table row of $query, checked against the unpaced run's answer.
measure() {
  local label=$1 engine=$2 rate=$3 timeout=${4:-}
  local events line
  events=$(awk -v r="$rate" -v s="$SECONDS_PER_RUN" 'BEGIN { printf "%.0f", r * s }')
  local args=(--rate "$rate")
  case $engine in
    weir) [ -n "$timeout" ] && args+=(--buffer-timeout "${timeout}ms")
      line=$(weir_bench "$query-$label" "$events" "${args[@]}") ;;
    flink) [ -n "$timeout" ] && args+=(--buffer-timeout-ms "$timeout")
      line=$(flink_bench "$query-$label" "$events" "${args[@]}") ;;
  esac
  local expected
  expected=$(run "oracle-$query-$label" "$weir" bench "$query" --parallelism 1 --events "$events")
  if [ "$(field outputs "$line") $(field checksum "$line")" != "$(field outputs "$expected") $(field checksum "$expected")" ]; then
    log "$query, $label: the answer differs from the unpaced run's: $line"
    exit 1
  fi
  local achieved
  achieved=$(field events_per_s "$line")
  log "$query, $label: $line"
  rows+="| $label | $(mega "$rate") | $(mega "$achieved") | ${timeout:-default} | $(field latency_p50_ms "$line") | $(field latency_p99_ms "$line") |"$'\n'
}

# table QUERY WEIR_CAPACITY_EVENTS FLINK_CAPACITY_EVENTS: the runs of one query;
# sets capacity_line and rows.
table() {
  query=$1
  # Capacity: the timed path at a rate far above what either engine reaches.
  log "$query: capacity"
  local weir_capacity flink_capacity
  weir_capacity=$(field events_per_s "$(weir_bench capacity "$2" --rate 1e12)")
  flink_capacity=$(field events_per_s "$(flink_bench capacity "$3" --rate 1e12)")
  log "$query: capacity: weir $weir_capacity events/s, flink $flink_capacity events/s"
  capacity_line="Weir $(mega "$weir_capacity") events/s, Flink $(mega "$flink_capacity") events/s"
  rows=""
  local weir_half flink_half
  weir_half=$(awk -v c="$weir_capacity" 'BEGIN { printf "%.0f", c / 2 }')
  flink_half=$(awk -v c="$flink_capacity" 'BEGIN { printf "%.0f", c / 2 }')
  measure "Weir, half its capacity" weir "$weir_half"
  measure "Weir, half its capacity, timeout 0" weir "$weir_half" 0
  measure "Flink, half its capacity" flink "$flink_half"
  measure "Flink, half its capacity, timeout 0" flink "$flink_half" 0
  measure "Weir, common rate" weir "$COMMON_RATE"
  measure "Flink, common rate" flink "$COMMON_RATE"
  measure "Flink, common rate, timeout 0" flink "$COMMON_RATE" 0
}

header='| run | rate (events/s) | achieved | buffer timeout (ms) | p50 (ms) | p99 (ms) |
|---|---|---|---|---|---|'
table q1 20000000 5000000
q1_capacity=$capacity_line q1_rows=$rows
table orders-window 200000000 5000000
window_capacity=$capacity_line window_rows=$rows

body="$work/section.md"
cat >"$body" <<MD
## Latency: q1 per record, orders-window per window

\`bench/latency.sh\` ($(date -u +%Y-%m-%d), parallelism $PARALLELISM, about $SECONDS_PER_RUN s per run, Weir commit
$(git -C "$repo" rev-parse --short HEAD)). Both engines in one process each, so one clock; each run's
events are held to the rate at the source. "default" is each engine's default buffer timeout: Weir 5 ms,
Flink 100 ms.

**q1**: a bid is stamped as the source lets it go, mapped to its q1 row and sent through one rebalance to
the sink, which takes the row's latency. Capacity on this path: $q1_capacity.

$header
$q1_rows
**orders-window**: each window's row is timed from the moment the watermark that fires the window left
the source (a probe chained right after the timestamp assigner notes when each watermark passes; with
several source subtasks, the last of them to pass the window's end) to the row's arrival at the sink,
after the key exchange and the window. How often a watermark is emitted is each engine's own (Flink
every 200 ms, Weir with its batches) and is not in the figure. Capacity on this path: $window_capacity.

$header
$window_rows
"achieved" is the events over the job's net run time, which for Flink includes the job's start. Every
run's answer equals the unpaced run's over the same events. The target of issue 17 is a p99 of at most
10 ms at half the job's capacity, on both.
MD
cat "$body"
$write && write_section "$repo/docs/benchmarks.md" LATENCY "$body"
exit 0
