#!/usr/bin/env bash
# A rescale under the operator with keyed state (issue 6): the time from a
# parallelism change (2 -> 3) to the job running at the new parallelism from
# its savepoint, with STATE_MB MiB of keyed state in the job's checkpoints.
#
# usage: bench/operator-rescale.sh [--write]
#
# Runs the whole e2e (e2e/run.sh: the real API server, the chart's operator
# as a pod, the node agent running pods as local processes, an S3 server)
# with release binaries, its stateful-rescale step at STATE_MB MiB: a dedup
# over order ids (every id kept) grows until a checkpoint holds STATE_MB MiB,
# then parallelism 2 -> 3 is timed to the StreamJob's status saying running at
# 3 from the rescale's savepoint (stop-with-savepoint, verification in S3,
# Recreate of the JobManager and TaskManagers, the restore), and to the new
# deployment's first completed checkpoint (checkpoints every 2 s).
#
# With --write, regenerates the "OPERATOR-RESCALE" section of docs/benchmarks.md.
#
# Environment: STATE_MB [100]  RATE [400000] (orders/s the source is paced at)
set -euo pipefail

write=false
[ "${1:-}" = "--write" ] && write=true
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/doc-section.sh
. "$repo/bench/doc-section.sh"
STATE_MB=${STATE_MB:-100}
RATE=${RATE:-400000}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

WEIR_E2E_RELEASE=1 WEIR_E2E_STATE_MB=$STATE_MB WEIR_E2E_STATE_RATE=$RATE bash "$repo/e2e/run.sh" 2>&1 | tee "$log" | grep '^ok - \|^not ok' >&2
line=$(grep '^ok - rescale 2 -> 3 with' "$log") || { echo "bench/operator-rescale.sh: the e2e did not get through the stateful rescale" >&2; exit 1; }
read -r mib running first <<<"$(sed -E 's/.* with ([0-9]+) MiB .* after ([0-9.]+) s, its first checkpoint there after ([0-9.]+) s/\1 \2 \3/' <<<"$line")"
echo "state ${mib} MiB: running at 3 after ${running} s, first checkpoint after ${first} s"

if $write; then
  body=$(mktemp)
  {
    echo "## Rescale under the operator, with keyed state"
    echo
    echo "\`bench/operator-rescale.sh --write\` ($(date -u +%Y-%m-%d), $(nproc) cores, commit $(git -C "$repo" rev-parse --short HEAD)): the e2e"
    echo "(a real API server, the chart's operator as a pod, pods as local processes, moto as S3) with release binaries;"
    echo "a dedup over order ids keeps every id until a checkpoint holds ${STATE_MB} MiB, then \`spec.parallelism\` 2 -> 3."
    echo
    echo "| keyed state in the checkpoint | to running at 3 from the savepoint | to its first checkpoint at 3 |"
    echo "|---|---|---|"
    echo "| ${mib} MiB | ${running} s | ${first} s |"
    echo
    echo "The first figure is what the StreamJob's status shows: the operator's stop-with-savepoint, its check"
    echo "that the savepoint's \`_metadata\` is in S3, the JobManager and TaskManager Deployments recreated, and"
    echo "the JobManager running the job at 3. The second adds the restore of the state into the new subtasks and"
    echo "a first checkpoint of the new deployment (every 2 s): the job is processing again from the savepoint."
  } >"$body"
  write_section "$repo/docs/benchmarks.md" OPERATOR-RESCALE "$body"
  rm -f "$body"
fi
