#!/usr/bin/env bash
# End-to-end tests on a real Kubernetes control plane (TESTING.md): etcd and
# kube-apiserver 1.20.2 built from Debian's source (cached by
# scripts/k8s-control-plane.sh), started here on loopback and stopped at the
# end. Each step prints `ok - ...` as it passes; the first failure stops the
# run with a non-zero exit.
#
# Steps so far (issue 6 is in progress; the operator's lifecycle scenario
# comes with its controller and node agent):
#   - the committed CRD installs and becomes Established;
#   - the schema refuses invalid StreamJobs, naming the fields, and accepts a valid one;
#   - the scale subresource maps to spec.parallelism; the status subresource exists.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=e2e/control-plane.sh
. "$repo/e2e/control-plane.sh"
work=$(mktemp -d)
trap 'stop_control_plane; rm -rf "$work"' EXIT
step() { echo "ok - $*"; }
fail() { echo "not ok - $*" >&2; exit 1; }

start_control_plane "$work/k8s" || fail "the control plane did not start"
step "control plane ready at $KUBE_API"

crds=/apis/apiextensions.k8s.io/v1/customresourcedefinitions
kube POST "$crds" "$repo/crds/streamjobs.weir.dev.yaml" application/yaml >"$work/crd.json"
[ "$KUBE_STATUS" = 201 ] || fail "installing the CRD: HTTP $KUBE_STATUS $(cat "$work/crd.json")"
for _ in $(seq 50); do
  kube GET "$crds/streamjobs.weir.dev" | grep -q '"type": "Established"' && break
  sleep 0.2
done
kube GET "$crds/streamjobs.weir.dev" | python3 -c '
import json, sys
c = {x["type"]: x["status"] for x in json.load(sys.stdin)["status"]["conditions"]}
sys.exit(0 if c.get("Established") == "True" else 1)' || fail "the CRD is not Established"
step "the committed CRD installs and is Established"

jobs=/apis/weir.dev/v1alpha1/namespaces/default/streamjobs
cat >"$work/invalid.yaml" <<'YAML'
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: { name: invalid }
spec:
  image: weir:latest
  pipeline: { name: j, source: { type: datagen, workload: orders }, sink: { type: stdout } }
  parallelism: 0
  upgradeMode: sometimes
  checkpointing: { interval: soon, dir: ftp://nowhere }
YAML
kube POST "$jobs" "$work/invalid.yaml" application/yaml >"$work/answer.json"; answer=$(cat "$work/answer.json")
[ "$KUBE_STATUS" = 422 ] || fail "an invalid StreamJob was not refused: HTTP $KUBE_STATUS $answer"
for field in spec.parallelism spec.upgradeMode spec.checkpointing.interval spec.checkpointing.dir; do
  grep -q "$field" <<<"$answer" || fail "the refusal does not name $field: $answer"
done
step "the schema refuses an invalid StreamJob, naming spec.parallelism, spec.upgradeMode and the checkpointing fields"

sed -e 's/name: invalid/name: order-monitor/' -e 's/parallelism: 0/parallelism: 2/' -e '/upgradeMode/d' \
  -e 's|checkpointing: .*|checkpointing: { interval: 10s, dir: s3://weir/checkpoints }|' "$work/invalid.yaml" >"$work/valid.yaml"
kube POST "$jobs" "$work/valid.yaml" application/yaml >"$work/answer.json"; answer=$(cat "$work/answer.json")
[ "$KUBE_STATUS" = 201 ] || fail "a valid StreamJob was refused: HTTP $KUBE_STATUS $answer"
python3 -c '
import json, sys
s = json.loads(sys.argv[1])["spec"]
assert (s["maxParallelism"], s["upgradeMode"], s["state"]) == (128, "savepoint", "running"), s' "$answer" \
  || fail "the defaults were not applied: $answer"
step "the schema accepts a valid StreamJob and fills in the defaults"

kube GET "$jobs/order-monitor/scale" >"$work/scale.json"; scale=$(cat "$work/scale.json")
python3 -c 'import json, sys; assert json.loads(sys.argv[1])["spec"]["replicas"] == 2' "$scale" \
  || fail "the scale subresource does not show spec.parallelism: $scale"
kube GET "$jobs/order-monitor/status" >"$work/status.json"
[ "$KUBE_STATUS" = 200 ] || fail "no status subresource: HTTP $KUBE_STATUS"
step "the scale subresource maps to spec.parallelism, and the status subresource exists"
echo "e2e: all steps passed"
