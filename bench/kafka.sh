#!/usr/bin/env bash
# The Kafka source against a plain rdkafka consumer loop (issue 5): events per
# second reading the same topic, in the same run, on the same broker.
#
# usage: bench/kafka.sh [--write]
#
# Builds weir and the weir-kafka examples in release, starts librdkafka's mock
# cluster (examples/mock_broker.rs; one broker on loopback, killed when the
# script ends) with a topic of PARTITIONS partitions, fills it with EVENTS
# orders through `weir datagen` (JSON, lz4), then alternates RUNS times:
#
#  (a) raw:    examples/plain_consumer.rs, one consumer assigned every
#              partition, counting records and payload bytes (no decoding);
#  (b) decode: the same loop decoding each record's JSON into a typed struct
#              (serde), the work Weir's source does per record;
#  (c) weir:   `weir run` of a bounded Kafka source (JSON decoded into typed
#              rows, per-partition watermarks) into a blackhole sink, p=1;
#
# and reports the median events per second of each, and weir's ratio to (b)
# (target: at least 0.8) and to (a). The plain loops time themselves from
# creating the consumer to the last record; weir's time is the job's own
# ("finished in"), from building the job to its end.
#
# The mock broker keeps about 5 MB per partition: EVENTS / PARTITIONS orders
# must fit (about 190k per partition with lz4).
#
# With --write, regenerates the "Kafka source" section of docs/benchmarks.md.
#
# Environment: EVENTS [2400000]  PARTITIONS [16]  RUNS [3]
set -euo pipefail

write=false
[ "${1:-}" = "--write" ] && write=true
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/doc-section.sh
. "$repo/bench/doc-section.sh"
EVENTS=${EVENTS:-2400000}
PARTITIONS=${PARTITIONS:-16}
RUNS=${RUNS:-3}

(cd "$repo" && cargo build --release --quiet -p weir-cli -p weir-kafka --features weir-kafka/testing --examples --bin weir)
bin="$repo/target/release"
work=$(mktemp -d)
fifo="$work/keep-open"
mkfifo "$fifo"
"$bin/examples/mock_broker" "orders:$PARTITIONS" <"$fifo" >"$work/bootstrap" &
broker=$!
exec 3>"$fifo"
trap 'exec 3>&-; kill $broker 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do [ -s "$work/bootstrap" ] && break; sleep 0.1; done
bootstrap=$(cat "$work/bootstrap")
echo "mock broker at $bootstrap; producing $EVENTS orders into $PARTITIONS partitions" >&2
"$bin/weir" datagen --workload orders --kafka "$bootstrap" --topic orders --count "$EVENTS" -q

cat >"$work/p.yaml" <<YAML
name: kafka-read
source:
  type: kafka
  bootstrap: "$bootstrap"
  topic: orders
  bounded: true
  fields: { order_id: string, region: string, amount: int, time: int }
  watermark: { field: time, out_of_orderness: 5s }
sink: { type: blackhole }
YAML

plain_rate() { # [DECODE=1]: events per second of one plain_consumer run
  local out events secs
  out=$("$bin/examples/plain_consumer" "$bootstrap" orders)
  events=$(sed -n 's/.*events=\([0-9]*\).*/\1/p' <<<"$out"); secs=$(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' <<<"$out")
  [ "$events" = "$EVENTS" ] || { echo "plain consumer read $events of $EVENTS" >&2; exit 1; }
  awk -v e="$events" -v s="$secs" 'BEGIN { printf "%.0f", e / s }'
}
raw=(); dec=(); weir=()
for r in $(seq "$RUNS"); do
  raw+=("$(plain_rate)")
  dec+=("$(DECODE=1 plain_rate)")
  "$bin/weir" run -q "$work/p.yaml" --rest-port 0 2>"$work/weir.log" || { cat "$work/weir.log" >&2; exit 1; }
  grep -q "finished in .*: $EVENTS rows" "$work/weir.log" || { cat "$work/weir.log" >&2; exit 1; }
  secs=$(sed -n 's/.*finished in \([0-9.]*\) s.*/\1/p' "$work/weir.log")
  weir+=("$(awk -v e="$EVENTS" -v s="$secs" 'BEGIN { printf "%.0f", e / s }')")
  echo "run $r: raw ${raw[-1]}/s, decode ${dec[-1]}/s, weir ${weir[-1]}/s" >&2
done
mr=$(median "${raw[@]}"); md=$(median "${dec[@]}"); mw=$(median "${weir[@]}")
ratio=$(awk -v a="$mw" -v b="$md" 'BEGIN { printf "%.2f", a / b }')
ratio_raw=$(awk -v a="$mw" -v b="$mr" 'BEGIN { printf "%.2f", a / b }')
ok=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.8) ? "met" : "NOT met" }')
body="$work/section.md"
cat >"$body" <<MD
## Kafka source

\`bench/kafka.sh\` ($(date -u +%Y-%m-%d), $EVENTS orders as JSON in $PARTITIONS partitions of librdkafka's
mock broker on loopback, the same machine; median of $RUNS alternating runs; the plain loops are timed from
creating the consumer to the last record, weir by the job's own \`finished in\` (0.1 s resolution)):

| reader | events/s |
|---|---|
| plain rdkafka consumer loop, counting records (no decoding) | $mr |
| plain rdkafka consumer loop, decoding each record's JSON into a struct (serde) | $md |
| \`weir run\`: Kafka source (JSON to typed rows, per-partition watermarks) -> blackhole, p=1 | $mw |

Weir / plain loop doing the same decoding: **$ratio** (target at least 0.8: $ok); Weir / counting loop: $ratio_raw.
Runs: counting ${raw[*]}; decoding ${dec[*]}; weir ${weir[*]}.

All readers set \`fetch.queue.backoff.ms=10\` (the source's default): with librdkafka's default of 1 s, a
consumer that drains its local queue faster than the broker refills it waits a second each time, and
every reader here ran 3-6x slower. The mock broker, librdkafka's broker thread and the reading thread
share the machine's 2 cores, so single runs vary by up to 2x; the medians are what to compare.
MD
cat "$body"
$write && write_section "$repo/docs/benchmarks.md" KAFKA "$body"
exit 0
