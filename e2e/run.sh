#!/usr/bin/env bash
# End-to-end tests on a real Kubernetes control plane (TESTING.md): etcd and
# kube-apiserver 1.20.2 built from Debian's source (cached by
# scripts/k8s-control-plane.sh), started here on loopback and stopped at the
# end. Each step prints `ok - ...` as it passes; the first failure stops the
# run with a non-zero exit.
#
# Steps:
#   - the committed CRD installs and becomes Established;
#   - the schema refuses invalid StreamJobs, naming the fields, and accepts a valid one;
#   - the scale subresource maps to spec.parallelism; the status subresource exists;
#   - the Helm chart's ServiceAccount and least-privilege RBAC (rendered by the real
#     Helm engine) apply, and the operator runs with that ServiceAccount's token;
#   - the real weir-operator (outside the cluster, through the API server's service
#     proxy) deploys the job's cluster, owned by the StreamJob, and reports an honest
#     status; an invalid pipeline becomes a condition naming the field, with nothing
#     torn down; deleting the StreamJob removes every object it owned.
#   - the lifecycle on a node: e2e/node_agent.py (scheduler and kubelet) runs the
#     chart's operator Deployment as a pod and each job's JobManager and
#     TaskManager pods as local processes on their own loopback addresses; a
#     bounded order monitor with exactly-once checkpoints to an S3 server runs,
#     is rescaled 2 -> 3 while it runs through the scale subresource (as an HPA
#     would), in place (a TaskManager added, a savepoint verified in S3, the
#     same JobManager), and finishes with committed output equal to the oracle's;
#   - JobManager HA through the operator: 3 JobManagers, one Lease, the Service
#     reaching the leader alone; the leader's pod deleted mid-run, a standby
#     takes over from the latest checkpoint, output still the oracle's;
#   - a missing image and a JobManager that exits at start: the status and
#     events name the pod and why (ErrImagePull; CrashLoopBackOff with its error);
#   - the autoscaler under a load that triples and falls back: `recommend`
#     reports and changes nothing, `active` scales up in place and back down,
#     and the committed output equals the oracle's;
#   - an unbounded job through its lifecycle: upgrades in each upgradeMode
#     (savepoint, last-state, stateless), suspend and resume, its JobManager
#     process SIGKILLed (the same deployment recovers its latest checkpoint), the
#     operator SIGKILLed in the middle of an in-place rescale (it resumes the
#     operation), the JobManager SIGKILLed after it (it resumes at the new
#     parallelism, not its command line's), a
#     savepoint that cannot be written (the upgrade is aborted, the old job runs
#     on), and deletion (a final savepoint, then every owned object gone);
#   - a rescale with keyed state (WEIR_E2E_STATE_MB, 16 MiB unless told), in
#     place and then the redeploying way, both timed;
#   - a user's Rust job binary (examples/rust-job) runs as a StreamJob with the
#     same answer as its one-process run;
#   - two `weir jobmanager --leader-lease` replicas elect one leader with a real
#     Lease; when the leader is killed, the standby takes the Lease over.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=e2e/control-plane.sh
. "$repo/e2e/control-plane.sh"
# Not under /tmp: a job's pods have a /tmp of their own (an emptyDir, their
# root file system being read-only), which would hide what they write here.
work=$(mktemp -d -p /var/tmp weir-e2e.XXXXXX)
# WEIR_E2E_KEEP=1 keeps the work directory (logs of every pod, the operator, the node agent).
cleanup_work() { if [ "${WEIR_E2E_KEEP:-0}" = 1 ]; then echo "e2e: kept $work" >&2; else rm -rf "$work"; fi; }
trap 'stop_control_plane; cleanup_work' EXIT
step() { echo "ok - $*"; }
# WEIR_E2E_RELEASE=1 runs release binaries (bench/operator-rescale.sh measures with them).
if [ "${WEIR_E2E_RELEASE:-0}" = 1 ]; then
  (cd "$repo" && cargo build --release --quiet -p weir-operator -p weir-cli -p rust-job \
    && cargo build --release --quiet -p weir-kafka --features testing --example mock_broker)
  bin_dir="${CARGO_TARGET_DIR:-$repo/target}/release"
else
  (cd "$repo" && cargo build --quiet -p weir-operator -p weir-cli -p rust-job \
    && cargo build --quiet -p weir-kafka --features testing --example mock_broker)
  bin_dir="${CARGO_TARGET_DIR:-$repo/target}/debug"
fi
fail() { echo "not ok - $*" >&2; exit 1; }

# The images, built from the repository's Dockerfile with buildah (no Docker
# daemon; scripts/images.sh) from the binaries above, and run by the node
# agent with runc. WEIR_E2E_PROCESSES=1 runs the binaries as local processes
# instead (the node agent's fallback).
if [ "${WEIR_E2E_PROCESSES:-0}" = 1 ]; then
  node_images=(--image "weir=$bin_dir/weir" --image "weir-operator=$bin_dir/weir-operator" --image "order-monitor-rust=$bin_dir/rust-job")
else
  bash "$repo/scripts/images.sh" --e2e "$bin_dir" e2e "$work/images" >"$work/images.txt" || fail "building the images"
  step "the Dockerfile's images built with buildah from Debian's packages, no daemon: $(tr '\n' ',' <"$work/images.txt" | sed 's/,$//; s/,/, /g')"
  # The containers run as 65532 and write their output where the test reads it.
  chmod 1777 "$work"
  node_images=(--images "$work/images" --share "$work")
fi

start_control_plane "$work/k8s" || fail "the control plane did not start"
step "control plane ready at $KUBE_API"

# The user's first step: `helm install` of the chart, through the real Helm
# engine (e2e/helm.py, Helm's Go SDK): the CRD from the chart's crds/, the
# operator's ServiceAccount, RBAC and Deployment. The operator's pod stays
# Pending until the node agent runs pods, further down.
venv="${WEIR_TEST_CACHE:-$HOME/.cache/weir-test}/venv"
# (Helm's client logs go to helm.log; its errors, and the release, to the caller.)
helm() { "$venv/bin/python" "$repo/e2e/helm.py" "$@" 2>>"$work/helm.log" || { tail -5 "$work/helm.log" >&2; return 1; }; }
cmp -s "$repo/crds/streamjobs.weir.dev.yaml" "$repo/charts/weir-operator/crds/streamjobs.weir.dev.yaml" \
  || fail "crds/streamjobs.weir.dev.yaml and the chart's copy differ"
cat >"$work/operator-values.yaml" <<'YAML'
image: { repository: weir-operator, tag: e2e }
envFrom: [ { secretRef: { name: s3 } } ]
YAML
helm install weir "$repo/charts/weir-operator" --namespace weir-system --create-namespace \
  -f "$work/operator-values.yaml" >"$work/helm.txt" || fail "helm install"
grep -q "REVISION: 1  STATUS: deployed" "$work/helm.txt" || fail "helm install: $(cat "$work/helm.txt")"
crds=/apis/apiextensions.k8s.io/v1/customresourcedefinitions
for _ in $(seq 50); do
  kube GET "$crds/streamjobs.weir.dev" | grep -q '"type": "Established"' && break
  sleep 0.2
done
kube GET "$crds/streamjobs.weir.dev" | python3 -c '
import json, sys
c = {x["type"]: x["status"] for x in json.load(sys.stdin)["status"]["conditions"]}
sys.exit(0 if c.get("Established") == "True" else 1)' || fail "the CRD is not Established"
step "helm install weir charts/weir-operator --namespace weir-system --create-namespace: $(cat "$work/helm.txt"); the chart's CRD is Established"

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
start_controller_manager "$work/k8s"

# Until the node agent runs pods, the operator runs outside the cluster (as
# in development) with the token of the ServiceAccount helm installed: what
# it may do is what the chart's RBAC grants.
sa=$(kubectl --namespace weir-system get deployment weir-weir-operator -o 'jsonpath={.spec.template.spec.serviceAccountName}')
# sa_token NAMESPACE NAME: the token of a ServiceAccount (its token Secret, which
# Kubernetes 1.20 creates).
sa_token() {
  local secret token
  for _ in $(seq 100); do
    secret=$(kube GET "/api/v1/namespaces/$1/serviceaccounts/$2" | python3 -c 'import json, sys; print((json.load(sys.stdin).get("secrets") or [{}])[0].get("name", ""))')
    [ -n "$secret" ] && token=$(kube GET "/api/v1/namespaces/$1/secrets/$secret" | python3 -c 'import base64, json, sys; print(base64.b64decode(json.load(sys.stdin)["data"]["token"]).decode())') \
      && echo "$token" && return 0
    sleep 0.2
  done
  fail "no token for the ServiceAccount $1/$2"
}
token=$(sa_token weir-system "$sa") || exit 1
sed "s|token: \"$KUBE_TOKEN\"|token: \"$token\"|" "$KUBECONFIG" >"$work/operator.kubeconfig"
grep -q "$token" "$work/operator.kubeconfig" || fail "could not write the operator's kubeconfig"
step "the operator runs with the token of the chart's ServiceAccount ($sa) and nothing more than the chart's RBAC"
metrics_port=$(free_port)
KUBECONFIG="$work/operator.kubeconfig" WEIR_LOG=info "$bin_dir/weir-operator" run --namespace default --jobmanager-access proxy \
  --metrics-addr "127.0.0.1:$metrics_port" --leader-lease weir-operator >"$work/operator.log" 2>&1 &
operator=$!
trap 'stop_pid $operator; stop_control_plane; cleanup_work' EXIT

# wait_for DESCRIPTION PYTHON_CONDITION PATH [SECONDS]: polls PATH (JSON in `o`), 60 s unless told,
# every WAIT_EVERY seconds (0.5; the timed rollouts look every 0.1 s, so that
# what they measure is not mostly the wait between two looks).
wait_for() {
  local what=$1 cond=$2 path=$3 seconds=${4:-60} every=${WAIT_EVERY:-0.5}
  for _ in $(seq "$(awk "BEGIN { print int($seconds / $every) }")"); do
    kube GET "$path" >"$work/obj.json"
    if [ "$KUBE_STATUS" != 000 ] && python3 -c "
import json, sys
o = json.load(open('$work/obj.json')); sys.exit(0 if ($cond) else 1)" 2>/dev/null; then
      return 0
    fi
    sleep "$every"
  done
  echo "--- $path:" >&2; cat "$work/obj.json" >&2; echo "--- operator log:" >&2; tail -20 "$work/operator.log" >&2
  if declare -F node_logs >/dev/null; then node_logs; fi
  fail "$what"
}

deployments=/apis/apps/v1/namespaces/default/deployments
owned="o.get('metadata', {}).get('ownerReferences', [{}])[0].get('kind') == 'StreamJob'"
wait_for "the JobManager Deployment" "$owned" "$deployments/order-monitor-jobmanager"
wait_for "the TaskManager Deployment" "$owned and o['spec']['replicas'] == 2" "$deployments/order-monitor-taskmanager"
wait_for "the pipeline ConfigMap" "$owned and 'workload: orders' in o['data']['pipeline.yaml']" \
  /api/v1/namespaces/default/configmaps/order-monitor-config
wait_for "the JobManager Service" "$owned" /api/v1/namespaces/default/services/order-monitor-jobmanager
hardened="all(c['securityContext']['readOnlyRootFilesystem'] and c['securityContext']['capabilities']['drop'] == ['ALL'] \
  and not c['securityContext']['allowPrivilegeEscalation'] and not c['securityContext']['privileged'] \
  and any(m['mountPath'] == '/tmp' for m in c['volumeMounts']) \
  and '--auth-secret-file' in c['args'] for c in o['spec']['template']['spec']['containers']) \
  and o['spec']['template']['spec']['securityContext']['runAsNonRoot'] \
  and o['spec']['template']['spec']['securityContext']['seccompProfile']['type'] == 'RuntimeDefault' \
  and o['spec']['template']['spec']['automountServiceAccountToken'] is False"
wait_for "the JobManager's pods run unprivileged, with the job's secret, found by Prometheus" "$hardened \
  and o['spec']['template']['metadata']['annotations'].get('prometheus.io/scrape') == 'true' \
  and o['spec']['template']['metadata']['annotations'].get('prometheus.io/port') == '8081'" "$deployments/order-monitor-jobmanager"
wait_for "the TaskManagers' pods run unprivileged, with the job's secret" "$hardened" "$deployments/order-monitor-taskmanager"
wait_for "the job's Secret" "$owned and len(o['data']['secret']) >= 64" /api/v1/namespaces/default/secrets/order-monitor-auth
wait_for "the job's NetworkPolicy" "$owned and o['spec']['podSelector']['matchLabels']['app.kubernetes.io/instance'] == 'order-monitor' \
  and len(o['spec']['ingress']) == 2" /apis/networking.k8s.io/v1/namespaces/default/networkpolicies/order-monitor-network
step "the operator deploys the job's cluster (ConfigMap, Service, JobManager and 2 TaskManagers), owned by the StreamJob"
step "the job's pods run as non-root on a read-only root file system, with no capability, no ServiceAccount token and the job's Secret mounted; a NetworkPolicy admits only the job's pods and the operator"

ready="{c['type']: c for c in o.get('status', {}).get('conditions', [])}.get('Ready', {})"
wait_for "an honest status" "o['status'].get('observedGeneration') == 1 and o['status'].get('phase') == 'Deploying' \
  and $ready.get('status') == 'False' and $ready.get('reason') == 'JobManagerUnreachable' \
  and 'weir.dev/final-savepoint' in o['metadata'].get('finalizers', [])" "$jobs/order-monitor"
step "the status says Deploying, observedGeneration 1, Ready=False because the JobManager does not answer (no kubelet runs it yet)"

curl -sf "http://127.0.0.1:$metrics_port/healthz" >/dev/null || fail "the operator's /healthz does not answer"
curl -sf "http://127.0.0.1:$metrics_port/readyz" >/dev/null || fail "the leading operator is not ready"
curl -sf "http://127.0.0.1:$metrics_port/metrics" >"$work/metrics.txt" || fail "the operator's /metrics does not answer"
grep -q 'weir_operator_streamjobs{phase="Deploying"} 1' "$work/metrics.txt" && grep -q 'weir_operator_reconciles_total{result="ok"} [1-9]' "$work/metrics.txt" \
  || { cat "$work/metrics.txt" >&2; fail "the operator's metrics do not count the job"; }
grep -q "leading (holding the Lease weir-operator" "$work/operator.log" || fail "the operator did not take its Lease"
step "the operator leads through its Lease (with the chart's RBAC) and serves /healthz, /readyz and /metrics counting the job"

kube GET "$deployments/order-monitor-jobmanager" >"$work/jm.json"
before=$(python3 -c "import json; print(json.load(open('$work/jm.json'))['metadata']['generation'])")
echo '{"spec": {"pipeline": {"name": "j", "source": {"type": "datagen", "workload": "orders", "cuont": 5}, "sink": {"type": "stdout"}}}}' >"$work/bad.json"
kube PATCH "$jobs/order-monitor" "$work/bad.json" application/merge-patch+json >/dev/null
[ "$KUBE_STATUS" = 200 ] || fail "patching the pipeline: HTTP $KUBE_STATUS"
wait_for "an InvalidSpec condition" "$ready.get('reason') == 'InvalidSpec' and 'spec.pipeline.source.cuont' in $ready.get('message', '') \
  and o['status'].get('observedGeneration') == 2" "$jobs/order-monitor"
kube GET "$deployments/order-monitor-jobmanager" >"$work/jm.json"
after=$(python3 -c "import json; print(json.load(open('$work/jm.json'))['metadata']['generation'])")
[ "$before" = "$after" ] || fail "the JobManager Deployment changed for an invalid spec ($before -> $after)"
step "an invalid pipeline sets Ready=False InvalidSpec naming spec.pipeline.source.cuont, and nothing deployed changes"

kube DELETE "$jobs/order-monitor" >/dev/null
for path in "$jobs/order-monitor" "$deployments/order-monitor-jobmanager" "$deployments/order-monitor-taskmanager" \
  /api/v1/namespaces/default/configmaps/order-monitor-config /api/v1/namespaces/default/services/order-monitor-jobmanager; do
  for _ in $(seq 120); do
    kube GET "$path" >/dev/null
    [ "$KUBE_STATUS" = 404 ] && break
    sleep 0.5
  done
  [ "$KUBE_STATUS" = 404 ] || { grep -v "503 Service Unavailable" "$work/operator.log" | tail -8 >&2; kube GET "$path" >&2; fail "$path still exists after the StreamJob was deleted"; }
done
step "deleting the StreamJob runs its finalizer and removes every object it owned"
if grep -i forbidden "$work/operator.log" >&2; then fail "the chart's RBAC refused the operator something (above)"; fi
step "the chart's RBAC refused the operator nothing"

# The lifecycle on a node: the node agent (e2e/node_agent.py) binds the pods
# and runs their containers as local processes, each on its own loopback
# address; checkpoints and savepoints go to an S3-compatible server.
# The server is moto (in memory, Python) unless WEIR_E2E_S3=s3s-fs (Rust, over
# a directory; `cargo install s3s-fs@0.14.1 --features binary --locked`),
# which bench/operator-rescale.sh runs with S3=s3s-fs.
s3_port=$(free_port)
case "${WEIR_E2E_S3:-moto}" in
  moto) "$venv/bin/moto_server" -H 127.0.0.1 -p "$s3_port" >"$work/moto.log" 2>&1 & ;;
  s3s-fs)
    # s3s-fs makes a missing bucket on the first write to it, where S3 (and
    # moto) refuse: a file in the bucket's place makes the writes to
    # s3://weir-missing fail, as the savepoint-abort step below expects.
    mkdir -p "$work/s3" && touch "$work/s3/weir-missing"
    "${S3S_FS:-s3s-fs}" --host 127.0.0.1 --port "$s3_port" --access-key test --secret-key test "$work/s3" >"$work/s3s-fs.log" 2>&1 & ;;
  *) fail "WEIR_E2E_S3=${WEIR_E2E_S3}: expected moto or s3s-fs" ;;
esac
moto=$!
trap 'stop_pid "${prom:-}"; stop_pid "${agent:-}"; stop_pid "${moto:-}"; stop_pid $operator; stop_control_plane; cleanup_work' EXIT
for _ in $(seq 100); do curl -s "http://127.0.0.1:$s3_port/" >/dev/null && break; sleep 0.1; done
AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test "$venv/bin/python" -c "
import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:$s3_port', region_name='us-east-1').create_bucket(Bucket='weir')" \
  || fail "creating the bucket on the S3 server"
echo '{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3"}, "stringData": {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}}' >"$work/secret.json"
kube POST /api/v1/namespaces/default/secrets "$work/secret.json" >/dev/null
[ "$KUBE_STATUS" = 201 ] || fail "creating the S3 credentials Secret: HTTP $KUBE_STATUS"
# From here on the operator runs as helm deployed it: a pod, in the cluster,
# reaching JobManagers through their Services (the chart's values give it the
# S3 credentials it verifies savepoints with).
stop_pid "$operator"
kubectl --namespace weir-system create secret generic s3 --from-literal=AWS_ACCESS_KEY_ID=test \
  --from-literal=AWS_SECRET_ACCESS_KEY=test >/dev/null || fail "kubectl create secret"
python3 "$repo/e2e/node_agent.py" "${node_images[@]}" --work "$work/node" >"$work/agent.log" 2>&1 &
agent=$!
node_logs() { tail -20 "$work/agent.log" >&2; for f in "$work"/node/pods/*/*.log; do echo "--- $f" >&2; tail -15 "$f" >&2; done; }
operator_deployment=/apis/apps/v1/namespaces/weir-system/deployments/weir-weir-operator
# operator_leads: the operator pod that leads (its gauge weir_operator_leading
# is 1) when exactly one pod is left, none other; fails otherwise.
operator_leads() {
  local pods ip
  pods=$(kubectl --namespace weir-system get pods -l app.kubernetes.io/instance=weir -o 'jsonpath={range .items[*]}{.metadata.name} {.status.podIP}{"\n"}{end}')
  [ "$(wc -l <<<"$pods")" = 1 ] || return 1
  read -r name ip <<<"$pods"
  curl -sf "http://$ip:8080/metrics" | grep -qx 'weir_operator_leading 1' && echo "$name"
}
wait_for "the operator pod ready" "o['status'].get('readyReplicas') == 1" "$operator_deployment"
for _ in $(seq 120); do leader=$(operator_leads) && break; sleep 0.5; done
[ -n "${leader:-}" ] || { node_logs; fail "the chart's operator pod does not lead"; }
step "the node agent runs the chart's operator Deployment: its pod $leader is ready and leads, with the chart's RBAC; an S3 server holds the state"

# helm upgrade: a new revision of the release rolls the operator's pod (a
# standby is ready, so the rolling update can replace the leader; the new pod
# takes the Lease over when the old one's expires).
helm upgrade weir "$repo/charts/weir-operator" --namespace weir-system -f "$work/operator-values.yaml" \
  --set 'logLevel=info\,weir_operator=debug' >"$work/helm.txt" || fail "helm upgrade"
grep -q "REVISION: 2  STATUS: deployed" "$work/helm.txt" || fail "helm upgrade: $(cat "$work/helm.txt")"
wait_for "the operator's Deployment rolled out" "o['metadata']['generation'] == 2 and o['status'].get('observedGeneration') == 2 \
  and o['status'].get('updatedReplicas') == 1 and o['status'].get('readyReplicas') == 1 and o['status'].get('replicas') == 1" "$operator_deployment"
for _ in $(seq 120); do upgraded=$(operator_leads) && [ "$upgraded" != "$leader" ] && break; upgraded=""; sleep 0.5; done
[ -n "$upgraded" ] || { node_logs; fail "after helm upgrade no new operator pod leads"; }
kubectl --namespace weir-system get deployment weir-weir-operator -o yaml | grep -q 'value: info,weir_operator=debug' \
  || fail "helm upgrade did not change the operator's log level"
step "helm upgrade weir (--set logLevel=info\\,weir_operator=debug): $(cat "$work/helm.txt"); the Deployment rolled $leader -> $upgraded, which leads"

# Prometheus (Debian's, with Kubernetes service discovery) with the committed scrape configuration finds the
# JobManagers and the operator through the API server, with the RBAC of
# monitoring/prometheus-rbac.yaml; the dashboard's queries run against it
# further down, while the autoscaler works.
kubectl apply -f "$repo/monitoring/prometheus-rbac.yaml" >/dev/null || fail "kubectl apply -f monitoring/prometheus-rbac.yaml"
sa_token monitoring prometheus >"$work/prometheus.token" || exit 1
"$venv/bin/python" "$repo/e2e/prometheus.py" config "$repo/monitoring/prometheus.yml" "$work/prometheus.yml" \
  --token-file "$work/prometheus.token" || fail "writing the Prometheus configuration"
prometheus="${WEIR_TEST_CACHE:-$HOME/.cache/weir-test}/prometheus/usr/bin/prometheus"  # scripts/test-deps.sh
prom_url="http://127.0.0.1:$(free_port)"
"$prometheus" --config.file "$work/prometheus.yml" --storage.tsdb.path "$work/prometheus" \
  --web.listen-address "${prom_url#http://}" >"$work/prometheus.log" 2>&1 &
prom=$!
for _ in $(seq 100); do curl -sf "$prom_url/-/ready" >/dev/null && break; sleep 0.2; done
curl -sf "$prom_url/-/ready" >/dev/null || { tail -20 "$work/prometheus.log" >&2; fail "Prometheus did not start"; }
step "Prometheus $("$prometheus" --version 2>&1 | head -1 | cut -d' ' -f3) runs monitoring/prometheus.yml, finding pods through the API server as monitoring/prometheus-rbac.yaml allows"

# job_manifest NAME IMAGE INTERVAL: the head of an e2e StreamJob (2 subtasks in one
# TaskManager, exactly-once checkpoints every INTERVAL to the S3 server); the
# caller appends the rest of its spec.
job_manifest() {
  cat <<YAML
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: { name: $1 }
spec:
  image: $2
  parallelism: 2
  taskManager: { slots: 2 }
  checkpointing: { interval: $3, dir: s3://weir/checkpoints }
  storage: { endpoint: "http://127.0.0.1:$s3_port", region: us-east-1, pathStyle: true, credentialsSecret: s3 }
YAML
}

# orders_window EVENTS RATE OUT: the pipeline of a bounded order monitor
# (per region and minute, into a transactional file sink at OUT).
orders_window() {
  cat <<YAML
  pipeline:
    name: orders-window
    source: { type: datagen, workload: orders, count: $1, rate: $2, watermark: { field: time, out_of_orderness: 5s } }
    steps: [ { key_by: region }, { window: { type: tumbling, size: 1m } }, { aggregate: { count: count(), sum: sum(amount) } } ]
    sink: { type: file, path: "$3" }
YAML
}

events=400000
{ job_manifest monitor weir:e2e 1s; orders_window "$events" 8000 "$work/out"; } >"$work/monitor.yaml"
kubectl apply -f "$work/monitor.yaml" >"$work/answer.txt" || fail "kubectl apply -f monitor.yaml"
grep -qx 'streamjob.weir.dev/monitor created' "$work/answer.txt" || fail "kubectl apply: $(cat "$work/answer.txt")"
wait_for "the job running" "o['status'].get('phase') == 'Running' and (o['status'].get('job') or {}).get('state') == 'running'" "$jobs/monitor" \
  || { node_logs; fail "the job did not run"; }
step "a bounded order monitor runs: the node agent started its JobManager and TaskManager, the operator sees it running"
if [ "${WEIR_E2E_PROCESSES:-0}" != 1 ]; then
  jm=$(pgrep -f -- "/usr/local/bin/weir jobmanager --pipeline /etc/weir/pipeline.yaml --job-name monitor " | head -1)
  [ -n "$jm" ] || fail "no JobManager process of the monitor job"
  python3 - "$jm" <<'PY' || fail "the JobManager's container is not what its pod asked for"
import os, sys
pid = sys.argv[1]
status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
uids, nspid = status["Uid"].split(), status["NSpid"].split()
root = next(l.split() for l in open(f"/proc/{pid}/mountinfo") if l.split()[4] == "/")
assert uids[0] == "65532", f"runs as uid {uids[0]}"
assert len(nspid) == 2 and nspid[1] == "1", f"not PID 1 of a pid namespace of its own: NSpid {nspid}"
assert "ro" in root[5].split(","), f"its root file system is mounted {root[5]}"
assert status["CapEff"].strip() == "0" * 16, f"has capabilities {status['CapEff'].strip()}"
PY
  step "the JobManager runs from its image in a runc container: uid 65532, PID 1 of its own pid namespace, no capabilities, a read-only root"
fi

monitor_deployment=$(python3 -c "import json; print(json.load(open('$work/obj.json'))['status']['deployment'])")
# Through the scale subresource, as an HPA or KEDA would.
kubectl scale sj monitor --replicas 3 >"$work/answer.txt" || fail "kubectl scale sj monitor --replicas 3"
grep -qx 'streamjob.weir.dev/monitor scaled' "$work/answer.txt" || fail "kubectl scale: $(cat "$work/answer.txt")"
started=$(date +%s.%N)
wait_for "the job running at parallelism 3" "o['status'].get('phase') == 'Running' and (o['status'].get('job') or {}).get('parallelism') == 3 \
  and (o['status'].get('lastSavepoint') or {}).get('path', '').startswith('s3://weir/checkpoints/') \
  and not o['status'].get('pendingOperation') and o['status'].get('deployment') == '$monitor_deployment'" "$jobs/monitor" \
  || { node_logs; fail "the rescale did not complete in place"; }
rescale_s=$(python3 -c "print(round($(date +%s.%N) - $started, 1))")
savepoint=$(python3 -c "import json; print(json.load(open('$work/obj.json'))['status']['lastSavepoint']['path'])")
AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test "$venv/bin/python" -c "
import boto3, sys
key = sys.argv[1].split('s3://weir/', 1)[1].rstrip('/') + '/_metadata'
boto3.client('s3', endpoint_url='http://127.0.0.1:$s3_port', region_name='us-east-1').head_object(Bucket='weir', Key=key)" "$savepoint" \
  || fail "the rescale's savepoint $savepoint is not in S3"
wait_for "a second TaskManager for the third slot" "o['spec']['replicas'] == 2" "$deployments/monitor-taskmanager"
step "kubectl scale sj monitor --replicas 3 (the scale subresource) while it runs, in place: a TaskManager added for the slot, a savepoint in S3 ($savepoint), the same JobManager running at 3 from it, in $rescale_s s"
# kubectl get sj: the CRD's printer columns (phase, parallelism, the job's
# state, the last savepoint, age).
kubectl get sj monitor >"$work/get.txt" || fail "kubectl get sj monitor"
python3 - "$work/get.txt" "$savepoint" <<'PY' || fail "kubectl get sj monitor printed: $(cat "$work/get.txt")"
import re, sys
header, row = [re.split(r"\s{2,}", line.strip()) for line in open(sys.argv[1]).read().splitlines()]
got = dict(zip(header, row))
assert header == ["NAME", "PHASE", "PARALLELISM", "JOB", "LAST SAVEPOINT", "AGE"], header
assert (got["NAME"], got["PHASE"], got["PARALLELISM"], got["JOB"], got["LAST SAVEPOINT"]) \
    == ("monitor", "Running", "3", "running", sys.argv[2]), got
PY
step "kubectl get sj monitor: $(tail -1 "$work/get.txt" | tr -s ' ')"
kubectl describe sj monitor >"$work/describe.txt" || fail "kubectl describe sj monitor"
for reason in Deploying Rescale Rescaled; do
  grep -Eq "^  Normal +$reason " "$work/describe.txt" || fail "kubectl describe sj monitor shows no $reason event: $(sed -n '/^Events:/,$p' "$work/describe.txt")"
done
step "kubectl describe sj monitor shows the operator's events: $(grep -E '^  Normal +Rescaled ' "$work/describe.txt" | head -1 | tr -s ' ' | cut -c1-160)"

wait_for "the job finished" "(o['status'].get('job') or {}).get('state') == 'finished'" "$jobs/monitor" 120
# committed_is_oracle DIR EVENTS: whether the parts committed in DIR are the
# orders-window oracle's rows for the first EVENTS orders (per region and minute).
committed_is_oracle() {
  python3 - "$1" "${WEIR_ORACLE_DIR:-$repo/bench/oracle}/orders.py" "$2" <<'PY'
import json, os, subprocess, sys
out, oracle, events = sys.argv[1], sys.argv[2], sys.argv[3]
rows = sorted((r["region"], r["window_start"], r["count"], r["sum"])
              for f in os.listdir(out) if f.startswith("part-")
              for r in map(json.loads, open(os.path.join(out, f))))
expected = json.loads(subprocess.run([sys.executable, oracle, events, "--json"], check=True, capture_output=True, text=True).stdout.splitlines()[0])
expected = sorted((r["region"], r["window_start"], r["count"], r["sum"]) for r in expected)
if rows != expected:
    sys.exit(f"{len(rows)} rows committed, the oracle has {len(expected)}; first difference: {next((a, b) for a, b in zip(rows + [None] * len(expected), expected + [None] * len(rows)) if a != b)}")
PY
}
committed_is_oracle "$work/out" "$events" || fail "the committed output is not the oracle's"
step "the job finishes with committed output equal to the oracle's ($events orders)"
kubectl delete sj monitor >"$work/answer.txt" || fail "kubectl delete sj monitor"
grep -qx 'streamjob.weir.dev "monitor" deleted' "$work/answer.txt" || fail "kubectl delete: $(cat "$work/answer.txt")"
kubectl get sj monitor >/dev/null 2>&1 && fail "kubectl delete sj monitor returned before the StreamJob was gone"
step "kubectl delete sj monitor: it waits for the operator's finalizer, and the StreamJob is gone"

# The seed's order monitor as committed (examples/k8s/order-monitor.yaml, only
# its image's tag changed): orders from Kafka, re-sent orders dropped, per
# region and minute to Redis, alerts to Kafka; two JobManagers (one leads),
# exactly-once checkpoints to S3. Kafka and Redis run as pods of images built
# like Weir's (e2e/Dockerfile); the S3 endpoint comes with the credentials.
kubectl apply -f "$repo/e2e/k8s/order-monitor-services.yaml" >/dev/null || fail "kubectl apply -f e2e/k8s/order-monitor-services.yaml"
kubectl wait --for=condition=Ready pod -l 'app in (kafka, redis)' --timeout=120s >/dev/null \
  || { node_logs; fail "the Kafka and Redis pods are not ready"; }
pod_ip() { kubectl get pods -l "app=$1" -o 'jsonpath={.items[0].status.podIP}'; }
kafka_ip=$(pod_ip kafka) redis_ip=$(pod_ip redis)
AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test "$venv/bin/python" -c "
import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:$s3_port', region_name='us-east-1').create_bucket(Bucket='weir-state')" \
  || fail "creating the bucket weir-state"
kubectl create secret generic weir-s3 --from-literal=AWS_ACCESS_KEY_ID=test --from-literal=AWS_SECRET_ACCESS_KEY=test \
  --from-literal=AWS_ENDPOINT_URL="http://127.0.0.1:$s3_port" >/dev/null || fail "kubectl create secret generic weir-s3"
# orders_to_kafka FROM COUNT: orders FROM.. produced into the topic, as the shop would.
orders_to_kafka() {
  "$bin_dir/weir" datagen --workload orders --kafka "$kafka_ip:9092" --topic orders --from "$1" --count "$2" >/dev/null 2>"$work/datagen.log" \
    || { cat "$work/datagen.log" >&2; fail "producing orders to Kafka"; }
}
# redis_is_oracle EVENTS: the Redis hashes hold, for every minute the watermark
# closed, the orders-dedup oracle's count over the first EVENTS orders, and
# nothing else; prints how many minutes.
redis_is_oracle() {
  python3 - "$redis_ip" "$1" "${WEIR_ORACLE_DIR:-$repo/bench/oracle}" <<'PY'
import subprocess, sys
ip, events, oracle = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sys.path.insert(0, oracle)
import workloads
expected = {(r, start): count for r, start, count, _ in workloads.orders_window(events, dedup=True)}
got = {}
for region in workloads.REGIONS:
    fields = subprocess.run(["redis-cli", "-h", ip, "-p", "6379", "--raw", "HGETALL", f"order_monitor:{region}"],
                            check=True, capture_output=True, text=True).stdout.split()
    for field, value in zip(fields[0::2], fields[1::2]):
        got[(region, int(field))] = int(value)
# Every order is at most 5 s out of order and the watermark lags 5 s: a minute
# ending 11 s before the last order's number has surely closed.
closed = {k: v for k, v in expected.items() if k[1] + 60_000 <= workloads.T0 + events - 11_000}
wrong = {k: (v, expected.get(k)) for k, v in got.items() if expected.get(k) != v}
missing = sorted(set(closed) - set(got))
if wrong or missing or not closed:
    sys.exit(f"{len(got)} minutes in Redis; wrong (Redis, oracle): {dict(list(wrong.items())[:3])}; missing: {missing[:3]}")
print(len(got))
PY
}
# wait_redis EVENTS: until redis_is_oracle holds (120 s at most).
wait_redis() {
  for _ in $(seq 240); do redis_is_oracle "$1" >"$work/redis.txt" 2>&1 && return 0; sleep 0.5; done
  cat "$work/redis.txt" >&2; node_logs; fail "Redis does not hold the oracle's counts for $1 orders"
}
om_events=240000
orders_to_kafka 0 "$om_events"
sed 's/image: weir:0.1.0/image: weir:e2e/' "$repo/examples/k8s/order-monitor.yaml" | kubectl apply -f - >"$work/answer.txt" \
  || fail "kubectl apply -f examples/k8s/order-monitor.yaml: $(cat "$work/answer.txt")"
wait_for "the order monitor running" "o['status'].get('phase') == 'Running' and (o['status'].get('job') or {}).get('state') == 'running'" \
  "$jobs/order-monitor" 120 || { node_logs; fail "the order monitor did not run"; }
wait_redis "$om_events"
step "kubectl apply -f examples/k8s/order-monitor.yaml: the seed's order monitor reads $om_events orders from the kafka pod, and Redis holds the oracle's count for each of its $(cat "$work/redis.txt") closed region-minutes"
om_deployment=$(kubectl get sj order-monitor -o 'jsonpath={.status.deployment}')
kubectl scale sj order-monitor --replicas 3 >/dev/null || fail "kubectl scale sj order-monitor --replicas 3"
wait_for "the order monitor running at 3" "o['status'].get('phase') == 'Running' and (o['status'].get('job') or {}).get('parallelism') == 3 \
  and not o['status'].get('pendingOperation') and o['status'].get('deployment') == '$om_deployment' \
  and (o['status'].get('lastSavepoint') or {}).get('reason') == 'rescale'" "$jobs/order-monitor" 120 || { node_logs; fail "the order monitor did not rescale"; }
orders_to_kafka "$om_events" "$om_events"
wait_redis $((2 * om_events))
step "kubectl scale sj order-monitor --replicas 3: in place through $(kubectl get sj order-monitor -o 'jsonpath={.status.lastSavepoint.path}'); $om_events more orders later Redis holds the oracle's count for each of $(cat "$work/redis.txt") region-minutes"
# Its row of the Grafana dashboard: the pipeline's metric step, through Prometheus.
order_monitor_row="Order monitor (examples/k8s/order-monitor.yaml)"
"$venv/bin/python" "$repo/e2e/prometheus.py" check "$prom_url" "$repo/monitoring/grafana/weir-dashboard.json" \
  --set namespace=default --set job=order-monitor --row "$order_monitor_row" >"$work/dashboard.txt" 2>&1 \
  || { cat "$work/dashboard.txt" >&2; fail "the order monitor's row of the dashboard"; }
curl -s "$prom_url/api/v1/query" --data-urlencode 'query=order_monitor_orders{job="order-monitor"}' >"$work/gauges.json"
step "the dashboard's order monitor row from the real Prometheus: $(python3 -c "
import json; r = json.load(open('$work/gauges.json'))['data']['result']
print(', '.join(sorted(f\"{s['metric']['region']} {s['value'][1]}\" for s in r)))") orders in each region's latest closed minute"
kubectl delete sj order-monitor >/dev/null || fail "kubectl delete sj order-monitor"
kubectl delete -f "$repo/e2e/k8s/order-monitor-services.yaml" >/dev/null || fail "kubectl delete -f e2e/k8s/order-monitor-services.yaml"
step "kubectl delete sj order-monitor (a final savepoint first), and its Kafka and Redis"

# JobManager HA through the operator: three JobManagers elect one leader with
# the job's Lease; the Service reaches the leader alone (a standby serves
# nothing until it leads, so it is not ready). The leader's pod is deleted
# mid-run: a standby takes the Lease over, recovers the deployment's latest
# checkpoint, and the committed output is still exactly the oracle's.
ha_events=200000
{ job_manifest ha weir:e2e 1s; echo "  jobManager: { replicas: 3 }"; orders_window "$ha_events" 6000 "$work/ha-out"; } >"$work/ha.yaml"
kube POST "$jobs" "$work/ha.yaml" application/yaml >"$work/answer.json"
[ "$KUBE_STATUS" = 201 ] || fail "applying the HA StreamJob: HTTP $KUBE_STATUS $(cat "$work/answer.json")"
wait_for "the HA job running, with a checkpoint" "o['status'].get('phase') == 'Running' and (o['status'].get('job') or {}).get('state') == 'running' \
  and o['status'].get('lastCheckpoint')" "$jobs/ha" || { node_logs; fail "the HA job did not run"; }
ha_pods="/api/v1/namespaces/default/pods?labelSelector=app.kubernetes.io%2Finstance%3Dha,app.kubernetes.io%2Fcomponent%3Djobmanager"
lease_holder() {
  kube GET /apis/coordination.k8s.io/v1/namespaces/default/leases/ha-jobmanager-leader \
    | python3 -c 'import json, sys; print(json.load(sys.stdin).get("spec", {}).get("holderIdentity", ""))'
}
# ready_jobmanagers: the names of the job's JobManager pods that are Ready.
ready_jobmanagers() {
  kube GET "$ha_pods" | python3 -c '
import json, sys
pods = json.load(sys.stdin)["items"]
print(" ".join(sorted(p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")
      and any(c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", [])))))'
}
leader=$(lease_holder); leader=${leader%-*}
[ "$(kube GET "$ha_pods" | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["items"]))')" = 3 ] || fail "not three JobManager pods"
[ "$(ready_jobmanagers)" = "$leader" ] || fail "the ready JobManagers are '$(ready_jobmanagers)', not the Lease's holder '$leader' alone"
kube DELETE "/api/v1/namespaces/default/pods/$leader" >/dev/null
deleted=$(date +%s.%N)
for _ in $(seq 120); do
  now_leader=$(lease_holder); now_leader=${now_leader%-*}
  [ -n "$now_leader" ] && [ "$now_leader" != "$leader" ] && [ "$(ready_jobmanagers)" = "$now_leader" ] && break
  sleep 0.5
done
[ "$now_leader" != "$leader" ] && [ "$(ready_jobmanagers)" = "$now_leader" ] \
  || { node_logs; fail "no standby took over from $leader (Lease: '$now_leader', ready: '$(ready_jobmanagers)')"; }
wait_for "the job running again under the new leader, from a checkpoint" "(o['status'].get('job') or {}).get('state') in ('running', 'finished') \
  and '/chk-' in ((o['status'].get('job') or {}).get('restoredFrom') or '')" "$jobs/ha" 60
takeover_s=$(python3 -c "print(round($(date +%s.%N) - $deleted, 1))")
restored=$(python3 -c "import json; print(json.load(open('$work/obj.json'))['status']['job']['restoredFrom'])")
wait_for "the HA job finished" "(o['status'].get('job') or {}).get('state') == 'finished'" "$jobs/ha" 120
committed_is_oracle "$work/ha-out" "$ha_events" || fail "after the leader's pod was deleted, the committed output is not the oracle's"
step "JobManager HA through the operator: 3 JobManagers, the Service's only ready one the Lease's holder; its pod deleted mid-run, $now_leader took over and the job ran on from $restored in $takeover_s s; committed output equal to the oracle's ($ha_events orders)"
kube DELETE "$jobs/ha" >/dev/null

# Pods that cannot run: an image the node does not have, and a JobManager that
# exits at start (its checkpoint bucket does not exist). The operator's status
# and events say which pod and why, not only that the JobManager is silent.
{ job_manifest no-image weir-missing:e2e 1s; cat <<YAML
  pipeline: { name: no-image, source: { type: datagen, workload: orders, rate: 10 }, sink: { type: blackhole } }
YAML
} >"$work/no-image.yaml"
sed -e 's/name: no-image/name: no-bucket/g' -e 's/weir-missing:e2e/weir:e2e/' -e 's#s3://weir/checkpoints#s3://no-such-bucket/checkpoints#' \
  "$work/no-image.yaml" >"$work/no-bucket.yaml"
for job in no-image no-bucket; do
  kube POST "$jobs" "$work/$job.yaml" application/yaml >"$work/answer.json"
  [ "$KUBE_STATUS" = 201 ] || fail "applying the StreamJob $job: HTTP $KUBE_STATUS $(cat "$work/answer.json")"
done
ready_message="next(c['message'] for c in o['status'].get('conditions', []) if c['type'] == 'Ready')"
wait_for "the missing image named in the status" "'pod no-image-jobmanager-' in $ready_message and 'ErrImagePull' in $ready_message \
  and 'weir-missing:e2e' in $ready_message" "$jobs/no-image" 60
image_says=$(python3 -c "import json; o = json.load(open('$work/obj.json')); print($ready_message)")
wait_for "the failing JobManager named in the status, with its own error" "'pod no-bucket-jobmanager-' in $ready_message \
  and 'CrashLoopBackOff' in $ready_message and 'no-such-bucket' in $ready_message" "$jobs/no-bucket" 90
bucket_says=$(python3 -c "import json; o = json.load(open('$work/obj.json')); print($ready_message)")
kube GET "/apis/events.k8s.io/v1/namespaces/default/events" >"$work/events.json"
python3 -c "
import json, sys
seen = {e['regarding']['name'] for e in json.load(open('$work/events.json'))['items'] if e['reason'] == 'PodsFailing'}
sys.exit(0 if {'no-image', 'no-bucket'} <= seen else f'PodsFailing events only for {sorted(seen)}')" || fail "no PodsFailing events"
for job in no-image no-bucket; do kube DELETE "$jobs/$job" >/dev/null; done
step "pods that cannot run are named in the status and a PodsFailing event: '${image_says#*; }' and '${bucket_says#*; }'"

# field PYTHON_EXPRESSION: evaluated on the object wait_for saw last.
field() { python3 -c "import json, sys; o = json.load(open('$work/obj.json')); print(eval(sys.argv[1]))" "$1"; }

# The autoscaler on a load that triples and falls back (a datagen rate profile;
# an external call of 2 ms per record bounds each subtask to 500 orders/s,
# whatever the machine): first in `recommend` mode, which reports and changes
# nothing, then `active`, which scales up in place (TaskManagers of one slot
# added first) and back down once the load fell, with exactly-once output.
# WEIR_E2E_AUTOSCALER_WINDOW (15s unless told; bench/operator-rescale.sh: 30s,
# the default window) is the metrics window, the stabilization and the scale-up interval;
# the load's phases last in proportion. The tail at the low rate outlasts the
# scale-down interval (2 windows) and a window of low load with room to spare:
# a job that finished before it could scale down would prove nothing.
as_window=${WEIR_E2E_AUTOSCALER_WINDOW:-15}
as_up=$((2 * as_window)) as_down=$((6 * as_window)) as_tail=$((7 * as_window))
as_events=$((300 * as_up + 900 * (as_down - as_up) + 300 * as_tail))
{ job_manifest autoscaled weir:e2e 1s | sed 's/parallelism: 2/parallelism: 1/; s/slots: 2/slots: 1/'; cat <<YAML
  autoscaler: { mode: recommend, metricsWindow: ${as_window}s, stabilization: ${as_window}s, scaleUpInterval: ${as_window}s, scaleDownInterval: $((2 * as_window))s, catchUpTime: $((2 * as_window))s, maxParallelism: 4 }
  pipeline:
    name: autoscaled
    source:
      type: datagen
      workload: orders
      count: $as_events
      rate: { steps: [{ at: 0s, rate: 300 }, { at: ${as_up}s, rate: 900 }, { at: ${as_down}s, rate: 300 }] }
      watermark: { field: time, out_of_orderness: 5s }
    steps: [ { external_call: { per_record: 2ms } }, { key_by: region }, { window: { type: tumbling, size: 1m } }, { aggregate: { count: count(), sum: sum(amount) } } ]
    sink: { type: file, path: "$work/autoscaled-out" }
YAML
} >"$work/autoscaled.yaml"
kube POST "$jobs" "$work/autoscaled.yaml" application/yaml >"$work/answer.json"
[ "$KUBE_STATUS" = 201 ] || fail "applying the autoscaled StreamJob: HTTP $KUBE_STATUS $(cat "$work/answer.json")"
as_="(o.get('status', {}).get('autoscaler') or {})"
wait_for "the autoscaled job running" "(o['status'].get('job') or {}).get('state') == 'running'" "$jobs/autoscaled" 60
tripled_at=$(python3 -c "print($(date +%s.%N) + $as_up)")
wait_for "a recommendation to scale up" "any(v['recommended'] > v['parallelism'] for v in $as_.get('vertices', []))" "$jobs/autoscaled" $((as_up + 10 * as_window))
decision_s=$(python3 -c "print(round($(date +%s.%N) - $tripled_at))")
recommended=$(field "max(v['recommended'] for v in $as_['vertices'])")
[ "$(field "(o['status'].get('job') or {}).get('parallelism')")" = 1 ] && [ "$(field "bool(o['status'].get('pendingOperation'))")" = False ] \
  || fail "recommend mode changed the job: $(cat "$work/obj.json")"
step "autoscaler in recommend mode: $decision_s s after the load tripled (window ${as_window}s) it recommends $recommended ($(field "$as_.get('decision')")) and the job stays at 1"
kubectl patch sj autoscaled --type merge -p '{"spec":{"autoscaler":{"mode":"active"}}}' >/dev/null || fail "kubectl patch sj autoscaled"
wait_for "the autoscaler scaling up" "(o['status'].get('job') or {}).get('parallelism', 0) >= 2 and o['status'].get('phase') == 'Running' and not o['status'].get('pendingOperation')" "$jobs/autoscaled" $((6 * as_window))
up=$(field "o['status']['job']['parallelism']")
step "kubectl patch sj autoscaled (autoscaler mode active): scaled 1 -> $up in place ($(field "$as_['recentRescales'][-1]['summary']"))"
# The dashboard while the autoscaled job runs: every query of
# monitoring/grafana/weir-dashboard.json returns data from the real Prometheus.
"$venv/bin/python" "$repo/e2e/prometheus.py" targets "$prom_url" >"$work/targets.txt" \
  || { tail -5 "$work/prometheus.log" >&2; fail "Prometheus does not scrape the job and the operator"; }
"$venv/bin/python" "$repo/e2e/prometheus.py" check "$prom_url" "$repo/monitoring/grafana/weir-dashboard.json" \
  --set namespace=default --set job=autoscaled --skip-row "$order_monitor_row" >"$work/dashboard.txt" 2>&1 || { cat "$work/dashboard.txt" >&2; fail "the dashboard's queries"; }
step "Prometheus scrapes $(wc -l <"$work/targets.txt") pods found by the pod annotations ($(cut -d' ' -f1 "$work/targets.txt" | tr '\n' ' ')); the dashboard's other rows: $(tail -1 "$work/dashboard.txt"), for the autoscaled job and the operator"
wait_for "the autoscaler scaling back down" "(o['status'].get('job') or {}).get('parallelism', 9) < $up" "$jobs/autoscaled" $((as_down + 10 * as_window))
ups=$(field "sum(1 for r in $as_['recentRescales'] if r['to'] > r['from'])")
up=$(field "max(r['to'] for r in $as_['recentRescales'])")
down=$(field "o['status']['job']['parallelism']")
step "once the load fell back, scaled $up -> $down ($(field "$as_['recentRescales'][-1]['summary']")); $ups scale-up rescales to converge"
wait_for "the autoscaled job finished" "(o['status'].get('job') or {}).get('state') == 'finished'" "$jobs/autoscaled" $((as_tail + 10 * as_window))
committed_is_oracle "$work/autoscaled-out" "$as_events" || fail "the autoscaled job's committed output is not the oracle's"
rescales=$(field "len($as_.get('recentRescales', []))")
step "the autoscaled job finishes after $rescales rescales with committed output equal to the oracle's ($as_events orders)"
kube DELETE "$jobs/autoscaled" >/dev/null

# An unbounded job through its lifecycle. Every rollout is a new deployment
# (status.deployment); what its job started from is status.job.restoredFrom,
# as the JobManager reports it.
{ job_manifest stream weir:e2e 1s; cat <<YAML
  pipeline:
    name: stream
    source: { type: datagen, workload: orders, rate: 2000, watermark: { field: time, out_of_orderness: 5s } }
    steps: [ { key_by: region }, { window: { type: tumbling, size: 10s } }, { aggregate: { count: count(), sum: sum(amount) } } ]
    sink: { type: file, path: "$work/stream-out" }
YAML
} >"$work/stream.yaml"
kube POST "$jobs" "$work/stream.yaml" application/yaml >"$work/answer.json"
[ "$KUBE_STATUS" = 201 ] || fail "applying the unbounded StreamJob: HTTP $KUBE_STATUS $(cat "$work/answer.json")"
st="o.get('status', {})"
job_="($st.get('job') or {})"
running="$st.get('phase') == 'Running' and $job_.get('state') == 'running'"
patch_stream() {
  echo "$1" >"$work/patch.json"
  kube PATCH "$jobs/stream" "$work/patch.json" application/merge-patch+json >"$work/answer.json"
  [ "$KUBE_STATUS" = 200 ] || fail "patching the StreamJob with $1: HTTP $KUBE_STATUS $(cat "$work/answer.json")"
}
# from_savepoint REASON: the job runs from the latest savepoint, taken for REASON.
from_savepoint() { echo "($st.get('lastSavepoint') or {}).get('reason') == '$1' and ($job_.get('restoredFrom') or '').rstrip('/') == $st['lastSavepoint']['path'].rstrip('/')"; }
wait_for "the unbounded job running" "$running" "$jobs/stream"
deployment=$(field "o['status']['deployment']")
step "an unbounded job runs (deployment $deployment, a fresh start)"

patch_stream '{"spec": {"pipeline": {"source": {"rate": 2500}}}}'
wait_for "the upgrade through a savepoint" "$st.get('deployment') != '$deployment' and $running and $(from_savepoint upgrade)" "$jobs/stream"
deployment=$(field "o['status']['deployment']")
step "upgrade (upgradeMode savepoint): stopped with a savepoint, redeployed from it ($(field "o['status']['job']['restoredFrom']"))"

patch_stream '{"spec": {"state": "suspended"}}'
wait_for "the job suspended" "$st.get('phase') == 'Suspended' and ($st.get('lastSavepoint') or {}).get('reason') == 'suspend'" "$jobs/stream"
suspended_at=$(field "o['status']['lastSavepoint']['path']")
for d in jobmanager taskmanager; do
  wait_for "the $d Deployment removed while suspended" "o.get('code') == 404" "$deployments/stream-$d"
done
patch_stream '{"spec": {"state": "running"}}'
wait_for "the job resumed" "$st.get('deployment') != '$deployment' and $running and $(from_savepoint suspend)" "$jobs/stream"
deployment=$(field "o['status']['deployment']")
step "suspend stops the job with a savepoint ($suspended_at) and removes its processes; running again resumes from it"

# jm_job JOB: the job as its JobManager's REST API has it (GET /v1/jobs/JOB,
# asked at its pod IP), or nothing.
jm_job() {
  local ip
  ip=$(kube GET "/api/v1/namespaces/default/pods?labelSelector=app.kubernetes.io/instance=$1,app.kubernetes.io/component=jobmanager" \
    | python3 -c 'import json, sys; print(next((p["status"].get("podIP", "") for p in json.load(sys.stdin)["items"] if not p["metadata"].get("deletionTimestamp")), ""))')
  [ -n "$ip" ] && curl -sf "http://$ip:8081/v1/jobs/$1" 2>/dev/null
}
# checkpointed [JOB [MIN_BYTES [SECONDS]]]: waits until JOB's running JobManager
# has completed a checkpoint of its own run, of at least MIN_BYTES; prints the
# checkpoint's size.
checkpointed() {
  local job=${1:-stream} min=${2:-0} seconds=${3:-60}
  for _ in $(seq $((seconds * 2))); do
    jm_job "$job" | python3 -c '
import json, sys
c = json.load(sys.stdin)["checkpoints"]["latest"] or {}
ok = "/chk-" in (c.get("path") or "") and c.get("size_bytes", 0) >= int(sys.argv[1])
print(c.get("size_bytes", 0)) if ok else None
sys.exit(0 if ok else 1)' "$min" && return 0
    sleep 0.5
  done
  node_logs; fail "$job completed no checkpoint of $min bytes or more within $seconds s"
}
jm_pid() { pgrep -f -- "jobmanager --pipeline /etc/weir/pipeline.yaml --job-name stream " | head -1; }
checkpointed >/dev/null
killed=$(jm_pid)
[ -n "$killed" ] || fail "no JobManager process of the stream job"
kill -9 "$killed"
wait_for "the JobManager recovering after SIGKILL" "$st.get('deployment') == '$deployment' and $running and '/chk-' in ($job_.get('restoredFrom') or '')" "$jobs/stream"
[ "$(jm_pid)" != "$killed" ] || fail "the JobManager process was not replaced"
step "SIGKILL of the JobManager process: the pod's container restarts and the same deployment recovers its latest checkpoint ($(field "o['status']['job']['restoredFrom']"))"

operator_pid() { pgrep -f -- "weir-operator run" | head -1; }
before=$(operator_pid)
patch_stream '{"spec": {"parallelism": 3}}'
# In place, the rescale is over in seconds: the operator is killed as soon as
# the operation is written ahead (adding a TaskManager, or the rescale sent).
wait_for "the rescale written ahead" "$st.get('pendingOperation')" "$jobs/stream"
kill -9 "$before"
wait_for "the rescale completed by the restarted operator" "$st.get('deployment') == '$deployment' and $running and $job_.get('parallelism') == 3 and $(from_savepoint rescale) and not $st.get('pendingOperation')" "$jobs/stream" 120
after=$(operator_pid)
[ -n "$after" ] && [ "$after" != "$before" ] || fail "the operator process was not restarted ($before, $after)"
step "the operator SIGKILLed in the middle of an in-place rescale 2 -> 3: restarted, it resumes the written-ahead operation, and the same deployment runs at 3 from the savepoint"

# The JobManager's command line still says --parallelism 2 (the in-place
# rescale left its pod alone): restarted, it resumes at its own latest checkpoint's 3.
checkpointed >/dev/null
killed=$(jm_pid)
kill -9 "$killed"
wait_for "the JobManager recovering at 3 after SIGKILL" "$st.get('deployment') == '$deployment' and $running and $job_.get('parallelism') == 3 and '/chk-' in ($job_.get('restoredFrom') or '')" "$jobs/stream"
[ "$(jm_pid)" != "$killed" ] || fail "the JobManager process was not replaced"
step "SIGKILL of the JobManager after the in-place rescale: the same deployment recovers its latest checkpoint at parallelism 3, not its command line's 2"

checkpointed >/dev/null
wait_for "a checkpoint in the status" "$st.get('lastCheckpoint')" "$jobs/stream"
before_id=$(field "o['status']['lastCheckpoint']['id']")
patch_stream '{"spec": {"upgradeMode": "last-state", "savepoints": {"dir": "s3://weir-missing/savepoints"}, "pipeline": {"source": {"rate": 3000}}}}'
# The newest snapshot in storage: a checkpoint, or the savepoint the old JobManager
# took when it was stopped (SIGTERM is a graceful stop), whichever is newer.
snapshot_id="int(($job_.get('restoredFrom') or 'none-0').rstrip('/').rsplit('-', 1)[1])"
wait_for "the last-state upgrade" "$st.get('deployment') != '$deployment' and $running \
  and ($job_.get('restoredFrom') or '').startswith('s3://weir/checkpoints/stream/') and $snapshot_id >= $before_id" "$jobs/stream"
deployment=$(field "o['status']['deployment']")
restored=$(python3 -c "import json; print(json.load(open('$work/obj.json'))['status']['job']['restoredFrom'])")
step "upgrade (upgradeMode last-state): redeployed at once from the newest snapshot in storage ($restored, checkpoint $before_id or later), savepoints now to s3://weir-missing (no such bucket)"

patch_stream '{"spec": {"upgradeMode": "savepoint", "pipeline": {"source": {"rate": 3500}}}}'
generation=$(python3 -c "import json; print(json.load(open('$work/answer.json'))['metadata']['generation'])")
conditions="{c['type']: c for c in $st.get('conditions', [])}"
wait_for "the upgrade aborted" "$st.get('observedGeneration') == $generation and $conditions.get('Progressing', {}).get('reason') == 'Aborted' \
  and $conditions.get('SnapshotHealthy', {}).get('status') == 'False' and $st.get('phase') == 'Running'" "$jobs/stream"
why=$(field "{c['type']: c for c in o['status']['conditions']}['SnapshotHealthy']['message']")
wait_for "the old job still running" "$st.get('deployment') == '$deployment' and $running and $job_.get('restoredFrom') == '$restored'" "$jobs/stream"
kube GET "/apis/events.k8s.io/v1/namespaces/default/events" >"$work/events.json"
python3 -c "
import json, sys
events = [e for e in json.load(open('$work/events.json'))['items'] if e['regarding']['name'] == 'stream' and e['reason'] == 'Aborted']
sys.exit(0 if events and 'weir-missing' in events[-1]['note'] else 1)" || fail "no Aborted event naming the savepoint directory"
# The stop-with-savepoint held the sources after its barrier; the failed write resumed them. A held
# source emits nothing, so its watermark stands still (its records_out counts the chain's output, the
# local phase's partials, which come only as windows end).
source_watermark() {
  jm_job stream | python3 -c '
import json, sys
d = json.load(sys.stdin)
fed = {e["to"] for e in d["edges"]}
print(min(v["metrics"]["current_watermark"] for v in d["vertices"] if v["id"] not in fed))'
}
read_before=$(source_watermark) || fail "the stream job's source watermark from its JobManager"
sleep 3
read_after=$(source_watermark) || fail "the stream job's source watermark from its JobManager"
[ "$read_after" -gt "$read_before" ] || { node_logs; fail "the sources read nothing after the failed stop-with-savepoint (their watermark $read_before, 3 s later $read_after): held, never resumed"; }
step "a savepoint that cannot be written aborts the upgrade: the old job keeps running and its sources read on (their watermark $(( (read_after - read_before) / 1000 )) s further 3 s later), SnapshotHealthy=False and an Aborted event say why ($why)"

patch_stream '{"spec": {"upgradeMode": "stateless", "savepoints": null, "pipeline": {"source": {"rate": 4000}}}}'
wait_for "the stateless upgrade" "$st.get('deployment') != '$deployment' and $running and not $job_.get('restoredFrom')" "$jobs/stream"
step "upgrade (upgradeMode stateless): redeployed without state"

kube DELETE "$jobs/stream" >/dev/null
for path in "$jobs/stream" "$deployments/stream-jobmanager" "$deployments/stream-taskmanager" \
  /api/v1/namespaces/default/configmaps/stream-config /api/v1/namespaces/default/services/stream-jobmanager \
  /api/v1/namespaces/default/serviceaccounts/stream-weir /apis/rbac.authorization.k8s.io/v1/namespaces/default/roles/stream-weir \
  /apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings/stream-weir; do
  wait_for "$path gone after the delete" "o.get('code') == 404" "$path"
done
wait_for "the stream job's pods gone" "not o.get('items')" "/api/v1/namespaces/default/pods?labelSelector=app.kubernetes.io/instance=stream"
kube GET "/apis/events.k8s.io/v1/namespaces/default/events" >"$work/events.json"
final=$(python3 -c "
import json
events = [e for e in json.load(open('$work/events.json'))['items'] if e['regarding']['name'] == 'stream' and e['reason'] == 'FinalSavepoint']
print(events[-1]['note'].split(' at ', 1)[1] if events else '')")
[ -n "$final" ] || fail "no FinalSavepoint event for the deleted job"
AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test "$venv/bin/python" -c "
import boto3, sys
key = sys.argv[1].split('s3://weir/', 1)[1].rstrip('/') + '/_metadata'
boto3.client('s3', endpoint_url='http://127.0.0.1:$s3_port', region_name='us-east-1').head_object(Bucket='weir', Key=key)" "$final" \
  || fail "the final savepoint $final is not in S3"
step "delete: a final savepoint ($final, recorded in a FinalSavepoint event), then every object the job owned and its pods are gone"

# A rescale with keyed state: a dedup over order ids keeps every id it has
# seen, until its checkpoints hold WEIR_E2E_STATE_MB MiB (bench/operator-rescale.sh
# measures 100 MiB with release binaries); then parallelism 2 -> 3 is timed
# to the job running at 3 from the savepoint, and to its first checkpoint
# there (the state restored and the job processing).
# Its keyed state is on disk (spec.stateBackend, WEIR_E2E_STATE_BACKEND=heap
# for the heap), in each TaskManager's state volume, with incremental checkpoints.
state_mb=${WEIR_E2E_STATE_MB:-16}
state_backend=${WEIR_E2E_STATE_BACKEND:-disk}
{ job_manifest state-job weir:e2e 2s; cat <<YAML
  savepointOnDelete: false
  stateBackend: { type: $state_backend$([ "$state_backend" = disk ] && echo ", volumeSizeLimit: 4Gi") }
  pipeline:
    name: state-job
    source: { type: datagen, workload: orders, rate: ${WEIR_E2E_STATE_RATE:-200000}, watermark: { field: time, out_of_orderness: 5s } }
    steps: [ { dedup: { key: order_id } }, { key_by: region }, { window: { type: tumbling, size: 10s } }, { aggregate: { count: count() } } ]
    sink: { type: blackhole }
YAML
} >"$work/state.yaml"
kube POST "$jobs" "$work/state.yaml" application/yaml >"$work/answer.json"
[ "$KUBE_STATUS" = 201 ] || fail "applying the stateful StreamJob: HTTP $KUBE_STATUS $(cat "$work/answer.json")"
wait_for "the stateful job running" "$running" "$jobs/state-job"
state_bytes=$(checkpointed state-job $((state_mb * 1048576)) 600)
if [ "$state_backend" = disk ]; then
  # The TaskManagers' stores live in their state volumes (as the node agent makes emptyDirs).
  ls -d "$work"/node/pods/default_state-job-taskmanager-*/volumes/state/weir-state-* >/dev/null 2>&1 \
    || { node_logs; fail "no disk state store in the TaskManagers' state volumes"; }
fi
# processing_after STARTED: the seconds from STARTED (epoch seconds) to the
# last of the stateful job's TaskManagers running the subtasks deployed to it
# since (their state restored first), by the TaskManagers' log lines.
processing_after() {
  python3 - "$1" "$work"/node/pods/default_state-job-taskmanager-*/*.log <<'PY'
import datetime, glob, re, sys
started, last = float(sys.argv[1]), None
for f in (f for f in sys.argv[2:] if not glob.has_magic(f)):
    for line in open(f, errors="replace"):
        m = re.match(r"(\S+Z)\s.*attempt \d+: \d+ subtasks running after", re.sub(r"\x1b\[[0-9;]*m", "", line))
        try:
            t = m and datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        if t and t >= started and (last is None or t > last):
            last = t
print(round(last - started, 1) if last else "unknown")
PY
}
# timed_rollout PATCH CONDITION: patches the stateful job; prints the seconds
# until CONDITION holds, until every subtask runs again (processing_after),
# and until the job's first checkpoint after that.
timed_rollout() {
  local started running_s
  echo "$1" >"$work/scale.json"
  kube PATCH "$jobs/state-job" "$work/scale.json" application/merge-patch+json >/dev/null
  started=$(date +%s.%N)
  WAIT_EVERY=0.1 wait_for "the stateful job rolled out: $2" "$2" "$jobs/state-job" 180 >&2
  running_s=$(python3 -c "print(round($(date +%s.%N) - $started, 1))")
  checkpointed state-job 1 120 >/dev/null
  echo "$running_s $(processing_after "$started") $(python3 -c "print(round($(date +%s.%N) - $started, 1))")"
}
timed=$(timed_rollout '{"spec": {"parallelism": 3}}' "$running and $job_.get('parallelism') == 3 and $(from_savepoint rescale) and not $st.get('pendingOperation')") || exit 1
read -r running_s processing_s first_checkpoint_s <<<"$timed"
jm_says=$(grep -ho 'rescaled to 3 in [0-9]* ms: [a-z0-9 ,]*' "$work"/node/pods/default_state-job-jobmanager-*/*.log 2>/dev/null | tail -1 || true)
step "rescale 2 -> 3 in place with $((state_bytes / 1048576)) MiB of keyed state ($state_backend backend) in its checkpoints: running at 3 from the savepoint after $running_s s, every subtask restored and processing after $processing_s s, its first checkpoint there after $first_checkpoint_s s (the JobManager: ${jm_says:-no timing line})"
# Two TaskManagers of two slots now run three subtasks: 3 -> 4 fits on the
# spare slot, so no pod starts (the TaskManager Deployment stays at 2 and its
# pods are the same ones): the in-place path alone.
tm_pods() { kubectl get pods -l app.kubernetes.io/instance=state-job,app.kubernetes.io/component=taskmanager -o 'jsonpath={.items[*].metadata.uid}'; }
tm_before=$(tm_pods)
[ -n "$tm_before" ] || fail "no TaskManager pods of state-job found by their labels"
timed=$(timed_rollout '{"spec": {"parallelism": 4}}' "$running and $job_.get('parallelism') == 4 and $(from_savepoint rescale) and not $st.get('pendingOperation')") || exit 1
read -r spare_running_s spare_processing_s spare_first_checkpoint_s <<<"$timed"
[ "$(tm_pods)" = "$tm_before" ] || fail "the rescale onto a spare slot changed the TaskManager pods: $tm_before, then $(tm_pods)"
jm_says=$(grep -ho 'rescaled to 4 in [0-9]* ms: [a-z0-9 ,]*' "$work"/node/pods/default_state-job-jobmanager-*/*.log 2>/dev/null | tail -1 || true)
step "rescale 3 -> 4 in place onto the TaskManagers' spare slot (the same pods) with $((state_bytes / 1048576)) MiB: running at 4 after $spare_running_s s, every subtask restored and processing after $spare_processing_s s, its first checkpoint there after $spare_first_checkpoint_s s (the JobManager: ${jm_says:-no timing line})"
# The same state the redeploying way, for comparison: a change beside the
# parallelism (a pod label) is an upgrade, through a savepoint and new pods.
timed=$(timed_rollout '{"spec": {"parallelism": 2, "podTemplate": {"metadata": {"labels": {"rollout": "redeploy"}}}}}' \
  "$running and $job_.get('parallelism') == 2 and $(from_savepoint upgrade)") || exit 1
read -r redeploy_running_s redeploy_processing_s redeploy_first_checkpoint_s <<<"$timed"
step "the same state redeployed 4 -> 2 (an upgrade through a savepoint and new pods): running at 2 after $redeploy_running_s s, every subtask restored and processing after $redeploy_processing_s s, its first checkpoint there after $redeploy_first_checkpoint_s s"
kube DELETE "$jobs/state-job" >/dev/null

# A user's job binary (examples/rust-job, the order monitor in Rust) as a
# StreamJob: the image's binary is its own JobManager and TaskManagers.
rust_events=200000
{ job_manifest rust-job order-monitor-rust:e2e 1s; cat <<YAML
  args: ["--events", "$rust_events", "--out", "$work/rust-out"]
YAML
} >"$work/rust.yaml"
kube POST "$jobs" "$work/rust.yaml" application/yaml >"$work/answer.json"
[ "$KUBE_STATUS" = 201 ] || fail "applying the Rust StreamJob: HTTP $KUBE_STATUS $(cat "$work/answer.json")"
wait_for "the Rust job finished" "$job_.get('state') == 'finished'" "$jobs/rust-job" 120
"$bin_dir/rust-job" "$rust_events" 2 >"$work/rust-local.txt" || fail "the Rust job binary in one process"
python3 - "$work/rust-out/minutes" "$work/rust-local.txt" <<'PY' || fail "the Rust job's committed rows differ from its one-process run"
import json, os, sys
out, local = sys.argv[1], sys.argv[2]
got = sorted((r["window_start"], r["count"], r["amount"], r["region"])
             for f in os.listdir(out) if f.startswith("part-") for r in map(json.loads, open(os.path.join(out, f))))
expected = sorted((int(f[0]), int(f[1]), int(f[3]), f[5]) for f in (l.split() for l in open(local)) if len(f) == 6 and f[2] == "orders")
if not expected or got != expected:
    sys.exit(f"{len(got)} rows on the cluster, {len(expected)} in one process")
PY
kube DELETE "$jobs/rust-job" >/dev/null
step "a user's Rust job binary (examples/rust-job) as a StreamJob: JobManager and TaskManagers of its own image, checkpoints in S3, and the same per-minute rows as its one-process run"

# Leader election: two JobManagers of one job, one Lease.
cat >"$work/lease-job.yaml" <<'YAML'
name: lease-job
source: { type: datagen, workload: orders, rate: 10 }
sink: { type: blackhole }
YAML
leases=/apis/coordination.k8s.io/v1/namespaces/default/leases
# jobmanager N [LEASE [DURATION]]: a JobManager candidate for LEASE (lease-job-jobmanager, 3 s).
jobmanager() {
  "$bin_dir/weir" jobmanager --pipeline "$work/lease-job.yaml" --bind 127.0.0.1 --rpc-port 0 --rest-port 0 \
    --leader-lease "${2:-lease-job-jobmanager}" --lease-duration "${3:-3s}" >/dev/null 2>"$work/jm$1.log" &
}
holder() { kube GET "$leases/lease-job-jobmanager" | python3 -c 'import json, sys; s = json.load(sys.stdin).get("spec", {}); print(s.get("holderIdentity", ""), s.get("leaseTransitions", 0))'; }
jobmanager 1; jm1=$!
trap 'stop_pid "${jm1:-}"; stop_pid "${jm2:-}"; stop_pid "${prom:-}"; stop_pid "${agent:-}"; stop_pid "${moto:-}"; stop_pid $operator; stop_control_plane; cleanup_work' EXIT
for _ in $(seq 100); do grep -q leading "$work/jm1.log" && break; sleep 0.1; done
grep -q leading "$work/jm1.log" || { cat "$work/jm1.log" >&2; fail "the first JobManager did not lead"; }
jobmanager 2; jm2=$!
for _ in $(seq 50); do grep -q "standing by" "$work/jm2.log" && break; sleep 0.1; done
grep -q "standing by" "$work/jm2.log" || { cat "$work/jm2.log" >&2; fail "the second JobManager did not stand by"; }
read -r first transitions <<<"$(holder)"
[[ "$first" == *"-$jm1" ]] || fail "the Lease is held by '$first', not by the leading JobManager (pid $jm1)"
kill -0 "$jm1" 2>/dev/null || { cat "$work/jm1.log" "$work/jm2.log" >&2; fail "the leading JobManager exited by itself"; }
kill -9 "$jm1"; wait "$jm1" 2>/dev/null || true
for _ in $(seq 100); do grep -q leading "$work/jm2.log" && break; sleep 0.1; done
grep -q leading "$work/jm2.log" || { cat "$work/jm2.log" >&2; stop_pid "$jm2"; fail "the standby did not take over"; }
read -r second transitions <<<"$(holder)"
stop_pid "$jm2"
[[ "$second" == *"-$jm2" && "$transitions" = 1 ]] || fail "after the takeover the Lease says '$second' with $transitions transitions"
step "two JobManagers elect one leader with a Lease; the standby takes over within the Lease's duration when the leader dies"
# A leader that is stopped (SIGTERM, as when its pod is deleted) gives its
# Lease up: the standby leads at its next try, long before the Lease's 60 s.
jobmanager 3 lease-job-handover 60s; jm3=$!
trap 'stop_pid "${jm3:-}"; stop_pid "${jm4:-}"; stop_pid "${prom:-}"; stop_pid "${agent:-}"; stop_pid "${moto:-}"; stop_pid $operator; stop_control_plane; cleanup_work' EXIT
for _ in $(seq 100); do grep -q leading "$work/jm3.log" && break; sleep 0.1; done
jobmanager 4 lease-job-handover 60s; jm4=$!
for _ in $(seq 50); do grep -q "standing by" "$work/jm4.log" && break; sleep 0.1; done
grep -q leading "$work/jm3.log" && grep -q "standing by" "$work/jm4.log" || { cat "$work/jm3.log" "$work/jm4.log" >&2; fail "no leader and standby for lease-job-handover"; }
stopped=$(date +%s.%N)
kill -TERM "$jm3"; wait "$jm3" 2>/dev/null || true
for _ in $(seq 300); do grep -q leading "$work/jm4.log" && break; sleep 0.1; done
handover_s=$(python3 -c "print(round($(date +%s.%N) - $stopped, 1))")
stop_pid "$jm4"
grep -q leading "$work/jm4.log" || { cat "$work/jm3.log" "$work/jm4.log" >&2; fail "the standby did not lead within 30 s of the leader's SIGTERM"; }
step "a leader stopped with SIGTERM gives its Lease (60 s) up: the standby led $handover_s s later"
# The user's last step: helm uninstall. The operator's objects go; the CRD
# stays, as Helm leaves what a chart's crds/ installed (deleting it would
# delete every StreamJob).
helm uninstall weir --namespace weir-system >"$work/helm.txt" || fail "helm uninstall"
for path in "$operator_deployment" /api/v1/namespaces/weir-system/serviceaccounts/weir-weir-operator \
  /apis/rbac.authorization.k8s.io/v1/clusterroles/weir-weir-operator /apis/rbac.authorization.k8s.io/v1/clusterrolebindings/weir-weir-operator; do
  wait_for "$path gone after helm uninstall" "o.get('code') == 404" "$path"
done
wait_for "the operator's pods gone" "not o.get('items')" "/api/v1/namespaces/weir-system/pods?labelSelector=app.kubernetes.io/instance=weir"
kubectl get crd streamjobs.weir.dev >/dev/null || fail "helm uninstall removed the CRD"
step "helm uninstall weir: $(cat "$work/helm.txt"); the operator's Deployment, pods, ServiceAccount and RBAC are gone, the CRD stays"
echo "e2e: all steps passed"
