#!/usr/bin/env bash
# The operator at scale (issue 6): its memory and CPU with JOBS StreamJobs
# applied to a real API server (the e2e control plane: etcd and
# kube-apiserver 1.20.2 on loopback; the kube-controller-manager too, so that
# the Deployments the operator applies become ReplicaSets and Pods; no
# kubelet, so the pods do not run, which this measures without).
#
# usage: bench/operator.sh [--write]
#
# Builds weir-operator in release, starts the control plane and the operator
# (through the API server's service proxy, as in e2e), applies JOBS
# StreamJobs, waits until every one has a status, and reports: the time until
# all were reconciled, the operator's resident memory then and after SETTLE
# more seconds, and its CPU time over those SETTLE seconds (steady state: the
# JobManagers do not answer, so every job is requeued and probed).
#
# With --write, regenerates the "Operator" section of docs/benchmarks.md.
#
# Environment: JOBS [100]  SETTLE [60]
set -euo pipefail

write=false
[ "${1:-}" = "--write" ] && write=true
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/doc-section.sh
. "$repo/bench/doc-section.sh"
# shellcheck source=e2e/control-plane.sh
. "$repo/e2e/control-plane.sh"
JOBS=${JOBS:-100}
SETTLE=${SETTLE:-60}

(cd "$repo" && cargo build --release --quiet -p weir-operator)
work=$(mktemp -d)
trap 'stop_pid "${operator:-}"; stop_control_plane; rm -rf "$work"' EXIT
start_control_plane "$work/k8s" >&2
start_controller_manager "$work/k8s"
kube POST /apis/apiextensions.k8s.io/v1/customresourcedefinitions "$repo/crds/streamjobs.weir.dev.yaml" application/yaml >/dev/null
sleep 2
"$repo/target/release/weir-operator" run --namespace default --jobmanager-access proxy \
  --metrics-addr "127.0.0.1:$(free_port)" >"$work/operator.log" 2>&1 &
operator=$!

ticks=$(getconf CLK_TCK)
cpu_s() { awk -v t="$ticks" '{ print ($14 + $15) / t }' "/proc/$operator/stat"; }
rss_mib() { awk '/VmRSS/ { print $2 / 1024 }' "/proc/$operator/status"; }

started=$(date +%s.%N)
for i in $(seq "$JOBS"); do
  cat >"$work/job.yaml" <<YAML
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: { name: job-$i }
spec:
  image: weir:0.1.0
  parallelism: 2
  checkpointing: { interval: 10s, dir: s3://weir/checkpoints }
  pipeline:
    name: job-$i
    source: { type: datagen, workload: orders, watermark: { field: time, out_of_orderness: 5s } }
    steps: [ { key_by: region }, { window: { type: tumbling, size: 1m } }, { aggregate: { count: count() } } ]
    sink: { type: blackhole }
YAML
  kube POST /apis/weir.dev/v1alpha1/namespaces/default/streamjobs "$work/job.yaml" application/yaml >/dev/null
  [ "$KUBE_STATUS" = 201 ] || { echo "applying job-$i: HTTP $KUBE_STATUS" >&2; exit 1; }
done
while :; do
  with_status=$(kube GET /apis/weir.dev/v1alpha1/namespaces/default/streamjobs | python3 -c '
import json, sys
jobs = json.load(sys.stdin)["items"]
invalid = [j["metadata"]["name"] for j in jobs for c in j.get("status", {}).get("conditions", []) if c.get("reason") == "InvalidSpec"]
if invalid:
    sys.exit(f"invalid StreamJobs: {invalid[:3]}")
print(sum(1 for j in jobs if j.get("status", {}).get("observedGeneration") == 1))')
  [ "$with_status" -ge "$JOBS" ] && break
  python3 -c "import sys; sys.exit(0 if $(date +%s) - ${started%.*} < 600 else 1)" || { echo "not all jobs reconciled in 600 s" >&2; exit 1; }
  sleep 1
done
reconciled=$(python3 -c "print(round($(date +%s.%N) - $started, 1))")
rss_then=$(rss_mib); cpu_then=$(cpu_s)
sleep "$SETTLE"
rss_after=$(rss_mib); cpu_after=$(cpu_s)
cpu_pct=$(python3 -c "print(round(100 * ($cpu_after - $cpu_then) / $SETTLE, 1))")
deployments=$(kube GET /apis/apps/v1/namespaces/default/deployments | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["items"]))')
[ "$deployments" -ge $((2 * JOBS)) ] || { echo "the operator applied $deployments Deployments for $JOBS jobs" >&2; exit 1; }

body="$work/section.md"
{
  echo "## Operator"
  echo
  echo "\`bench/operator.sh --write\` ($(date -u +%Y-%m-%d), $(nproc) cores): the release \`weir-operator\` against a real"
  echo "API server (kube-apiserver 1.20.2 and etcd on loopback), $JOBS StreamJobs applied at once (their pods do"
  echo "not run: no kubelet)."
  echo
  echo "| measure | value |"
  echo "|---|---|"
  echo "| time until all $JOBS have a status (observedGeneration 1) | ${reconciled} s |"
  echo "| Deployments the operator applied | $deployments |"
  echo "| operator resident memory then | $(printf '%.1f' "$rss_then") MiB |"
  echo "| operator resident memory $SETTLE s later | $(printf '%.1f' "$rss_after") MiB |"
  echo "| operator CPU over those $SETTLE s | ${cpu_pct} % of one core |"
  echo
  echo "In the steady state every job is requeued and its JobManager probed through the API server's proxy"
  echo "(none answers here), which is what the CPU figure is."
} >"$body"
cat "$body"
$write && write_section "$repo/docs/benchmarks.md" OPERATOR "$body"
exit 0
