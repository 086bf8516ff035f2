#!/usr/bin/env bash
# The distributed runtime (issue 4): what the network path costs per record,
# and how fast a job recovers from a lost TaskManager.
#
# usage: bench/cluster.sh [--write]
#
# Builds weir in release, then, in the same run on the same machine:
#
#  1. Network path: q5 and orders-window at parallelism 2, RUNS times each,
#     alternating (a) `weir run` (one process: exchanges are in-memory
#     queues) and (b) `weir run --taskmanagers 2` (two TaskManager processes:
#     every hash exchange crosses TCP, serialized, under credit-based flow
#     control). Reports the median events per second of each and the cost of
#     the network path per event, (b - a) / events. Both times are the run's
#     own ("finished in"), so (b) includes starting the TaskManagers.
#  2. Recovery: orders-window, unbounded at RATE events/s, 2 TaskManagers,
#     checkpoints every second. KILLS times: SIGKILL one TaskManager, then
#     measure the time until the job is running again (REST state `running`
#     with one more restart) and until its first new output (a new committed
#     file in the sink's directory, which the file sink writes when a
#     checkpoint completes). Target: at most 3 s.
#
# With --write, regenerates the "Distributed runtime" section of docs/benchmarks.md.
#
# Environment: EVENTS [10000000]  RUNS [3]  RATE [50000]  KILLS [3]
set -euo pipefail

write=false
[ "${1:-}" = "--write" ] && write=true
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/doc-section.sh
. "$repo/bench/doc-section.sh"
EVENTS=${EVENTS:-10000000}
RUNS=${RUNS:-3}
RATE=${RATE:-50000}
KILLS=${KILLS:-3}

(cd "$repo" && cargo build --release --quiet -p weir-cli --bin weir)
weir="$repo/target/release/weir"
work=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$work"' EXIT

# seconds WORKLOAD EXTRA...: the run's own time ("finished in X s").
seconds() {
  local w=$1; shift
  rm -rf "$work/out"
  "$weir" run -q "$repo/examples/workloads/$w.yaml" --parallelism 2 --rest-port 0 \
    --set "source.count=$EVENTS" --set "sink.path=$work/out" "$@" 2>"$work/err" >/dev/null \
    || { cat "$work/err" >&2; exit 1; }
  sed -n 's/.* in \([0-9.]*\) s.*/\1/p' "$work/err" | tail -1
}

declare -A local_s dist_s
for w in q5 orders-window; do
  a=(); b=()
  for _ in $(seq "$RUNS"); do
    a+=("$(seconds "$w")")
    b+=("$(seconds "$w" --taskmanagers 2)")
  done
  local_s[$w]=$(median "${a[@]}")
  dist_s[$w]=$(median "${b[@]}")
  echo "$w: one process ${a[*]} s; 2 TaskManagers ${b[*]} s" >&2
done

# Recovery: the helper prints "running_ms first_output_ms" per kill.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$weir" run -q "$repo/examples/workloads/orders-window.yaml" --taskmanagers 2 --parallelism 2 --rest-port "$port" \
  --set source.count=1000000000 --set "source.rate=$RATE" --set "sink.path=$work/rec" \
  --checkpoint-dir "$work/cp" --checkpoint-interval 1s --restart-strategy fixed-delay:0s:100 2>"$work/rec.err" >/dev/null &
run=$!
recovery=$(python3 - "$port" "$run" "$work/rec" "$KILLS" <<'PY'
import json, os, signal, sys, time, urllib.request
port, run, out, kills = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
def job():
    try:
        return json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/jobs/orders-window", timeout=2))
    except Exception:
        return {}
def taskmanagers():
    pids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = open(f"/proc/{p}/stat").read()
                cmd = open(f"/proc/{p}/cmdline").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == run and "taskmanager" in cmd:
                pids.append(int(p))
    return pids
def committed():
    return {f for f in os.listdir(out) if f.startswith("part-")} if os.path.isdir(out) else set()
deadline = time.time() + 60
while not (job().get("state") == "running" and len(job().get("taskmanagers", [])) == 2 and committed()):
    assert time.time() < deadline, "the job never ran"
    time.sleep(0.05)
for k in range(kills):
    time.sleep(4)
    restarts = job().get("restarts", 0)
    before = committed()
    os.kill(taskmanagers()[k % 2], signal.SIGKILL)
    t0 = time.time()
    running = output = None
    while running is None or output is None:
        assert time.time() - t0 < 60, "no recovery within 60 s"
        j = job()
        if running is None and j.get("state") == "running" and j.get("restarts", 0) > restarts:
            running = time.time() - t0
        if output is None and running is not None and committed() - before:
            output = time.time() - t0
        time.sleep(0.01)
    print(f"{running*1000:.0f} {output*1000:.0f}")
PY
)
kill -INT $run; wait $run || true
echo "recovery (running_ms first_output_ms):" $recovery >&2
run_ms=$(median $(echo "$recovery" | awk '{print $1}'))
out_ms=$(median $(echo "$recovery" | awk '{print $2}'))

body="$work/section.md"
{
  echo "## Distributed runtime"
  echo
  echo "\`bench/cluster.sh --write\` ($(date -u +%Y-%m-%d), $(nproc) cores). Parallelism 2, $EVENTS events,"
  echo "median of $RUNS runs alternating one process (\`weir run\`) and two TaskManager processes"
  echo "(\`weir run --taskmanagers 2\`: every hash exchange crosses TCP, serialized, with credits)."
  echo "Times are the runs' own, so the cluster's include starting its TaskManagers."
  echo
  echo "| workload | one process, events/s | 2 TaskManagers, events/s | network path per event |"
  echo "|---|---|---|---|"
  for w in q5 orders-window; do
    awk -v w="$w" -v n="$EVENTS" -v a="${local_s[$w]}" -v b="${dist_s[$w]}" \
      'BEGIN { printf "| %s | %.0f | %.0f | %.0f ns |\n", w, n / a, n / b, (b - a) * 1e9 / n }'
  done
  echo
  echo "Recovery from a TaskManager killed with SIGKILL (orders-window at $RATE events/s, checkpoints"
  echo "every 1 s, restart delay 0, median of $KILLS kills): the job runs again after **${run_ms} ms**"
  echo "and writes its first new output (a checkpoint completes, the file sink commits) after"
  echo "**${out_ms} ms** (target: at most 3 s). The lost connection is noticed at once; the"
  echo "replacement TaskManager process starts, registers, and the job restores from the latest"
  echo "checkpoint."
} >"$body"
cat "$body"
$write && write_section "$repo/docs/benchmarks.md" CLUSTER "$body"
exit 0
