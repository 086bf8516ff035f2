#!/usr/bin/env bash
# A rescale under the operator with keyed state (issue 6): the time from a
# parallelism change (2 -> 3) to the job running at the new parallelism from
# its savepoint, with STATE_MB MiB of keyed state in the job's checkpoints
# (as stored: compressed, about a third of the state as encoded).
#
# usage: bench/operator-rescale.sh [--write]
#
# Runs the whole e2e (e2e/run.sh: the real API server, the chart's operator
# as a pod, the node agent running pods as local processes, an S3 server)
# with release binaries, its stateful-rescale step at STATE_MB MiB: a dedup
# over order ids (every id kept) grows until a checkpoint holds STATE_MB MiB,
# then parallelism 2 -> 3 is timed to the StreamJob's status saying running at
# 3 in place (the JobManager's rescale, asked once a TaskManager added for the
# third slot runs: stop-with-savepoint, verification in S3, the subtasks restarted
# from it), 3 -> 4 in place onto the spare slot (no pod starts), and 4 -> 2 the
# redeploying way; each also to every subtask restored and processing (the
# TaskManagers' log lines) and to the job's first completed checkpoint at the
# new parallelism (checkpoints every 2 s).
#
# With --write, regenerates the "OPERATOR-RESCALE" section of docs/benchmarks.md.
#
# The same run measures the autoscaler (the e2e's autoscaled job, with the
# default metrics window of WINDOW seconds, and the stabilization and
# scale-up interval at the same): the decision latency from the load tripling to the recommendation,
# and the scale-up rescales until it converged; the "AUTOSCALER" section.
#
# Environment: STATE_MB [30] (as stored: each key group a zstd frame; 30 MiB
#   stored is about 100 MiB of keyed state as encoded, issue 12's size)
#   RATE [400000] (orders/s the source is paced at)  WINDOW [30, the default]
#   STATE_BACKEND [heap] (the stateful job's spec.stateBackend: heap or disk)
#   S3 [s3s-fs] (the e2e's S3 server: s3s-fs, Rust, installed once into the
#   test cache with cargo if it is not on the PATH; or moto, in memory, Python,
#   which the e2e of the test command uses and which costs about a second of
#   each rescale here; see e2e/run.sh)
#   FROM_LOG (the output of an earlier run of this script at the same commit:
#   its e2e lines are read instead of running the e2e again)
set -euo pipefail

write=false
[ "${1:-}" = "--write" ] && write=true
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/doc-section.sh
. "$repo/bench/doc-section.sh"
STATE_MB=${STATE_MB:-30}
WINDOW=${WINDOW:-30}
RATE=${RATE:-400000}
STATE_BACKEND=${STATE_BACKEND:-heap}
S3=${S3:-s3s-fs}
cache=${WEIR_TEST_CACHE:-$HOME/.cache/weir-test}
export S3S_FS=${S3S_FS:-$(command -v s3s-fs || echo "$cache/s3s-fs/bin/s3s-fs")}
if [ "$S3" = s3s-fs ] && [ ! -x "$S3S_FS" ]; then
  echo "bench/operator-rescale.sh: installing s3s-fs 0.14.1 into $cache/s3s-fs (once)" >&2
  cargo install --quiet --root "$cache/s3s-fs" s3s-fs@0.14.1 --features binary --locked >&2
fi
case "$S3" in
  moto) s3_says="moto (in memory, Python)" ;;
  s3s-fs) s3_says="s3s-fs $("$S3S_FS" --version 2>/dev/null | awk '{print $2}') (Rust, over a local directory)" ;;
  *) echo "bench/operator-rescale.sh: S3=$S3: expected moto or s3s-fs" >&2; exit 2 ;;
esac
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if [ -n "${FROM_LOG:-}" ]; then
  cp "$FROM_LOG" "$log"
else
  # What the e2e runs beside weir (moto, the Helm SDK, Prometheus...): installed once per machine, cached.
  bash "$repo/scripts/test-deps.sh" >&2
  WEIR_E2E_S3=$S3 WEIR_E2E_RELEASE=1 WEIR_E2E_STATE_BACKEND=$STATE_BACKEND WEIR_E2E_STATE_MB=$STATE_MB WEIR_E2E_STATE_RATE=$RATE WEIR_E2E_AUTOSCALER_WINDOW=$WINDOW bash "$repo/e2e/run.sh" 2>&1 | tee "$log" | grep '^ok - \|^not ok' >&2
fi
line=$(grep '^ok - rescale 2 -> 3 in place with' "$log") || { echo "bench/operator-rescale.sh: the e2e did not get through the stateful rescale" >&2; exit 1; }
read -r mib running processing first <<<"$(sed -E 's/.* with ([0-9]+) MiB .* after ([0-9.]+) s, every subtask restored and processing after ([0-9.a-z]+) s, its first checkpoint there after ([0-9.]+) s .*/\1 \2 \3 \4/' <<<"$line")"
jm_line=$(sed -E 's/.*\(the JobManager: (.*)\)$/\1/' <<<"$line")
line=$(grep '^ok - rescale 3 -> 4 in place onto' "$log") || { echo "bench/operator-rescale.sh: the e2e did not get through the rescale onto a spare slot" >&2; exit 1; }
read -r spare_running spare_processing spare_first <<<"$(sed -E 's/.* running at 4 after ([0-9.]+) s, every subtask restored and processing after ([0-9.a-z]+) s, its first checkpoint there after ([0-9.]+) s .*/\1 \2 \3/' <<<"$line")"
spare_jm=$(sed -E 's/.*\(the JobManager: (.*)\)$/\1/' <<<"$line")
line=$(grep '^ok - the same state redeployed 4 -> 2' "$log") || { echo "bench/operator-rescale.sh: the e2e did not get through the redeploy" >&2; exit 1; }
read -r re_running re_processing re_first <<<"$(sed -E 's/.* running at 2 after ([0-9.]+) s, every subtask restored and processing after ([0-9.a-z]+) s, its first checkpoint there after ([0-9.]+) s/\1 \2 \3/' <<<"$line")"
echo "state ${mib} MiB, S3 ${s3_says}: in place with a TaskManager added, running at 3 after ${running} s, processing after ${processing} s, first checkpoint after ${first} s; in place on a spare slot, running at 4 after ${spare_running} s, processing after ${spare_processing} s, first checkpoint after ${spare_first} s; redeployed, running at 2 after ${re_running} s, processing after ${re_processing} s, first checkpoint after ${re_first} s"
echo "JobManager: 2 -> 3: ${jm_line:-no timing line}; 3 -> 4: ${spare_jm:-no timing line}"
line=$(grep '^ok - autoscaler in recommend mode' "$log") || { echo "bench/operator-rescale.sh: the e2e did not get through the autoscaler" >&2; exit 1; }
read -r decision recommended <<<"$(sed -E 's/.*mode: ([0-9]+) s after .* it recommends ([0-9]+) .*/\1 \2/' <<<"$line")"
line=$(grep '^ok - once the load fell back' "$log") || { echo "bench/operator-rescale.sh: the autoscaler did not scale back down" >&2; exit 1; }
read -r peak low ups <<<"$(sed -E 's/.*scaled ([0-9]+) -> ([0-9]+) .*; ([0-9]+) scale-up rescales.*/\1 \2 \3/' <<<"$line")"
echo "autoscaler (window ${WINDOW}s): decision ${decision} s after the load tripled, recommending ${recommended}; ${ups} scale-up rescales to ${peak}, back down to ${low}"

if $write; then
  body=$(mktemp)
  {
    echo "## Rescale under the operator, with keyed state"
    echo
    echo "\`bench/operator-rescale.sh --write\` ($(date -u +%Y-%m-%d), $(nproc) cores, commit $(git -C "$repo" rev-parse --short HEAD)): the e2e"
    echo "(a real API server, the chart's operator as a pod, pods as local processes, ${s3_says} as S3) with release binaries;"
    echo "a dedup over order ids keeps every id until a checkpoint holds ${STATE_MB} MiB (as stored: each key group a zstd"
    echo "frame, \`checkpointing.compression\`'s default); then the parallelism 2 -> 3,"
    echo "which the operator makes in place, adding a TaskManager for the third slot first, 3 -> 4 onto the spare slot"
    echo "of the two TaskManagers (no pod starts), and back to 2 with a pod label changed too, which is an upgrade and redeploys."
    echo
    echo "| keyed state stored in the checkpoint | path | to running at the new parallelism | to every subtask restored and processing | to its first checkpoint there |"
    echo "|---|---|---|---|---|"
    echo "| ${mib} MiB | in place, a TaskManager added (2 -> 3) | ${running} s | **${processing} s** | ${first} s |"
    echo "| ${mib} MiB | in place, a spare slot (3 -> 4) | ${spare_running} s | **${spare_processing} s** | ${spare_first} s |"
    echo "| ${mib} MiB | redeploy (4 -> 2) | ${re_running} s | ${re_processing} s | ${re_first} s |"
    echo
    echo "In place: the JobManager's rescale API (for 2 -> 3 asked once the added TaskManager's container runs, its slot awaited while"
    echo "the savepoint is taken): stop-with-savepoint,"
    echo "the savepoint verified in S3 (size and CRC of every file), the subtasks restarted from it on the TaskManagers"
    echo "there are. The JobManager's own account: 2 -> 3 \`${jm_line:-(no timing line)}\`; 3 -> 4 \`${spare_jm:-(no timing line)}\`."
    echo "Redeploy: the operator's stop-with-savepoint, its check that the \`_metadata\` is in S3, the JobManager and"
    echo "TaskManager Deployments recreated, and the new JobManager restoring. Running is the StreamJob's status saying"
    echo "so (the subtasks deployed); processing is the last TaskManager's log line that its subtasks run, their state"
    echo "restored (a subtask's state is read before its thread starts), from the patch; the first checkpoint (every 2 s)"
    echo "confirms it."
  } >"$body"
  write_section "$repo/docs/benchmarks.md" OPERATOR-RESCALE "$body"
  {
    echo "## The autoscaler's reaction"
    echo
    echo "\`bench/operator-rescale.sh --write\` ($(date -u +%Y-%m-%d), $(nproc) cores, commit $(git -C "$repo" rev-parse --short HEAD)), the same"
    echo "e2e run: a job of parallelism 1 whose subtasks each keep up with 500 orders/s (an external call of 2 ms per"
    echo "record), under a datagen load of 300 orders/s that triples to 900/s and falls back; metrics window"
    echo "${WINDOW} s (the default: 30 s), stabilization and scale-up interval ${WINDOW} s (defaults 60 s: the first"
    echo "decision after a start waits for a full window anyway), the scale-down interval at $((2 * WINDOW)) s."
    echo
    echo "| | Weir | Flink Kubernetes Operator (defaults) |"
    echo "|---|---|---|"
    echo "| from a sustained 3x load step to the decision | ${decision} s (recommending ${recommended}) | about 15-20 min (15 min window, 5 min stabilization) |"
    echo "| rescales to a configuration that keeps up | ${ups} (1 -> ${peak}) | (FLINK-36018: jobs rescaled over 20 times a day) |"
    echo "| back down once the load fell | ${peak} -> ${low} | |"
    echo
    echo "The decision is recorded the moment it is made (\`status.autoscaler\`, an event); the rescale follows in"
    echo "place in the time of the section above."
  } >"$body"
  write_section "$repo/docs/benchmarks.md" AUTOSCALER "$body"
  rm -f "$body"
fi
