#!/usr/bin/env bash
# Chaos (issue 15): SIGKILLs at random moments, and not a row lost or duplicated.
#
# usage: bench/chaos.sh [--write]
#
# For each sink in SINKS (the file sink, then the PostgreSQL exactly-once
# sink): orders-window at RATE orders/s on a JobManager and three
# TaskManagers (separate processes on loopback, one slot each, parallelism
# 3), exactly-once checkpoints every second to S3 (moto), the job's secret on
# every process. KILLS times, at a random moment 1-3 s after the job runs
# again, one process is SIGKILLed: the JobManager one time in five, else a
# TaskManager; it is started again at once, as Kubernetes would (a
# JobManager recovers its job from the latest checkpoint). Then the job runs
# to its end, and its committed output (the sink's part files, or the table)
# must equal the oracle's exactly: 0 rows lost, 0 duplicated.
#
# Reports the kills, the restarts, the total downtime and the time from each
# kill to the job running again. The seed of the kill moments is printed;
# SEED=... replays a run. With --write, regenerates the "CHAOS" section of
# docs/benchmarks.md.
#
# Environment: KILLS [100]  RATE [20000]  SINKS ["file postgres"]  SEED [clock]
#              WEIR_BIN (a weir binary to use instead of building the release one)
set -euo pipefail

write=false
[ "${1:-}" = "--write" ] && write=true
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/doc-section.sh
. "$repo/bench/doc-section.sh"
KILLS=${KILLS:-100}
RATE=${RATE:-20000}
SINKS=${SINKS:-file postgres}
SEED=${SEED:-$(date +%s%N)}
venv="${WEIR_TEST_CACHE:-$HOME/.cache/weir-test}/venv"
[ -x "$venv/bin/moto_server" ] || bash "$repo/scripts/test-deps.sh" >&2

if [ -n "${WEIR_BIN:-}" ]; then
  weir=$WEIR_BIN
else
  (cd "$repo" && cargo build --release --quiet -p weir-cli --bin weir)
  weir="$repo/target/release/weir"
fi
work=$(mktemp -d -p /var/tmp weir-chaos.XXXXXX)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$work"' EXIT
echo "chaos: SEED=$SEED, $KILLS kills per sink, work in $work" >&2

results=()
for sink in $SINKS; do
  line=$("$venv/bin/python" "$repo/bench/chaos.py" --weir "$weir" --repo "$repo" --work "$work/$sink" \
    --sink "$sink" --kills "$KILLS" --rate "$RATE" --seed "$SEED")
  echo "$line" >&2
  results+=("$line")
done

if $write; then
  body="$work/section.md"
  {
    echo "## Chaos: SIGKILLs at random moments"
    echo
    echo "\`bench/chaos.sh --write\` ($(date -u +%Y-%m-%d), $(nproc) cores, commit $(git -C "$repo" rev-parse --short HEAD), SEED=$SEED):"
    echo "orders-window at $RATE orders/s, parallelism 3 on a JobManager and three TaskManager processes,"
    echo "exactly-once checkpoints every second to S3 (moto), the job's secret on every process; $KILLS"
    echo "SIGKILLs per sink at random moments (the JobManager one time in five), each process started again"
    echo "at once. The committed output is compared with the oracle's row by row (a count and a sum of amounts"
    echo "per region and minute: one order lost or written twice changes a row)."
    echo
    echo "| sink | kills (JobManager / TaskManager) | rows lost | rows duplicated | total downtime | kill to running, median / p90 / max |"
    echo "|---|---|---|---|---|---|"
    for r in "${results[@]}"; do echo "$r" | sed -n 's/^table: //p'; done
  } >"$body"
  write_section "$repo/docs/benchmarks.md" CHAOS "$body"
fi
