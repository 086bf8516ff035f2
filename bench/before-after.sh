#!/usr/bin/env bash
# Two builds of weir side by side on the benchmark workloads: a refactor's
# "no throughput lost" check. Runs alternate (before, after, before, ...) so
# that the machine's noise falls on both; the median of RUNS runs is shown.
#
# usage: bench/before-after.sh BEFORE_WEIR AFTER_WEIR
#
# Environment (defaults in brackets):
#   MODE          [bench] `bench`: `weir bench` (the Rust API); `run`: `weir run`
#                 of examples/workloads/WORKLOAD.yaml (pipeline files, the
#                 runtime `weir run` starts), rows to a file sink; `pipeline`:
#                 `weir bench --pipeline` of the same files (rows to a checksum)
#   WORKLOADS     [orders-window orders-dedup q0 q1 q2 q5 q7]
#   PARALLELISMS  [1 2]
#   EVENTS        [10000000]
#   RUNS          [3]
#
# Prints a markdown table: events per second (wall) and per CPU-second, and
# after/before ratios of the medians. Exits non-zero if a run fails or the two
# builds disagree on a result (outputs= and checksum=).
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BEFORE_WEIR AFTER_WEIR" >&2; exit 2; }
before=$1 after=$2
WORKLOADS=${WORKLOADS:-orders-window orders-dedup q0 q1 q2 q5 q7}
PARALLELISMS=${PARALLELISMS:-1 2}
EVENTS=${EVENTS:-10000000}
RUNS=${RUNS:-3}

field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
MODE=${MODE:-bench}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

bench_line() { "$1" bench "$2" --events "$EVENTS" --parallelism "$3" 2>/dev/null | grep -m1 '^query='; }

# The same line for `weir run`: wall and CPU time from /usr/bin/time, the answer
# a checksum of the sorted output rows.
run_line() {
  rm -rf "$work/out"
  /usr/bin/time -f '%e %U %S' -o "$work/time" "$1" run -q "$repo/examples/workloads/$2.yaml" \
    --parallelism "$3" --rest-port 0 --set "source.count=$EVENTS" --set "sink.path=$work/out" \
    2>"$work/err" >/dev/null || { cat "$work/err" >&2; return 1; }
  read -r wall user sys <"$work/time"
  local rows sum
  rows=$(cat "$work"/out/part-* | wc -l)
  sum=$(cat "$work"/out/part-* | sort | md5sum | cut -c1-16)
  awk -v e="$EVENTS" -v w="$wall" -v u="$user" -v s="$sys" -v r="$rows" -v c="$sum" \
    'BEGIN {printf "query=x events_per_s=%.0f cpu_ms=%.0f outputs=%s checksum=%s\n", e / w, (u + s) * 1000, r, c}'
}

pipeline_line() {
  "$1" bench --pipeline "$repo/examples/workloads/$2.yaml" --events "$EVENTS" --parallelism "$3" 2>/dev/null |
    grep -m1 '^query='
}

run() {
  case "$MODE" in
    run) run_line "$@" ;;
    pipeline) pipeline_line "$@" ;;
    *) bench_line "$@" ;;
  esac
}

echo "| workload | p | before events/s | after events/s | after/before | before events/CPU-s | after events/CPU-s | after/before |"
echo "|---|---|---|---|---|---|---|---|"
status=0
for w in $WORKLOADS; do
  for p in $PARALLELISMS; do
    bw=() aw=() bc=() ac=() answer=""
    for _ in $(seq "$RUNS"); do
      for side in before after; do
        bin=$before; [ "$side" = after ] && bin=$after
        line=$(run "$bin" "$w" "$p") || { echo "$side $w p=$p FAILED" >&2; status=1; continue; }
        got="$(field outputs "$line") $(field checksum "$line")"
        if [ -z "$answer" ]; then answer=$got; elif [ "$got" != "$answer" ]; then
          echo "MISMATCH $w p=$p: $side gave $got, expected $answer" >&2; status=1
        fi
        wall=$(field events_per_s "$line")
        cpu=$(awk -v e="$EVENTS" -v ms="$(field cpu_ms "$line")" 'BEGIN {printf "%.0f", e / (ms / 1000)}')
        if [ "$side" = before ]; then bw+=("$wall"); bc+=("$cpu"); else aw+=("$wall"); ac+=("$cpu"); fi
      done
    done
    mbw=$(median "${bw[@]}") maw=$(median "${aw[@]}") mbc=$(median "${bc[@]}") mac=$(median "${ac[@]}")
    awk -v w="$w" -v p="$p" -v a="$mbw" -v b="$maw" -v c="$mbc" -v d="$mac" \
      'BEGIN {printf "| %s | %s | %.2fM | %.2fM | %.2f | %.2fM | %.2fM | %.2f |\n", w, p, a/1e6, b/1e6, b/a, c/1e6, d/1e6, d/c}'
  done
done
exit $status
