# Sourced by the end-to-end scripts: a real Kubernetes control plane on
# loopback (TESTING.md): etcd from Debian, and kube-apiserver and
# kube-controller-manager 1.20.2 built from Debian's source by
# scripts/k8s-control-plane.sh (cached). Token authentication for the tests
# (an admin token), RBAC, service-account signing keys; no scheduler and no
# kubelet (the node agent plays those).
#
#   . e2e/control-plane.sh
#   start_control_plane DIR      # sets KUBE_API, KUBE_TOKEN, KUBE_CA; writes DIR/kubeconfig
#   kube GET /apis/...           # curl the API server as admin
#   kubectl get sj               # the kubectl built from the same source, as admin
#   stop_control_plane
#
# Ports: etcd on a free port pair, the API server on a free port, all 127.0.0.1.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start_control_plane() {
  local dir=$1 bin
  bin=$(bash "$(dirname "${BASH_SOURCE[0]}")/../scripts/k8s-control-plane.sh")
  mkdir -p "$dir/etcd" "$dir/pki"
  local etcd_port peer_port api_port
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
  etcd --data-dir "$dir/etcd" --name e2e \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "e2e=http://127.0.0.1:$peer_port" >"$dir/etcd.log" 2>&1 &
  ETCD_PID=$!
  openssl genrsa -out "$dir/pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$dir/pki/sa.key" -pubout -out "$dir/pki/sa.pub" 2>/dev/null
  KUBE_TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  echo "$KUBE_TOKEN,admin,admin,system:masters" >"$dir/pki/tokens.csv"
  "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" --insecure-port 0 \
    --cert-dir "$dir/pki" --token-auth-file "$dir/pki/tokens.csv" \
    --authorization-mode RBAC \
    --service-account-key-file "$dir/pki/sa.pub" --service-account-signing-key-file "$dir/pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-cluster-ip-range 10.96.0.0/16 \
    --enable-admission-plugins NamespaceLifecycle,ServiceAccount \
    >"$dir/apiserver.log" 2>&1 &
  APISERVER_PID=$!
  KUBE_API="https://127.0.0.1:$api_port"
  KUBE_CA="$dir/pki/apiserver.crt"
  local i
  for i in $(seq 120); do
    if [ -f "$KUBE_CA" ] && curl -sf --cacert "$KUBE_CA" -H "Authorization: Bearer $KUBE_TOKEN" "$KUBE_API/readyz" >/dev/null 2>&1; then
      break
    fi
    kill -0 "$APISERVER_PID" 2>/dev/null || { tail -20 "$dir/apiserver.log" >&2; return 1; }
    sleep 0.5
  done
  curl -sf --cacert "$KUBE_CA" -H "Authorization: Bearer $KUBE_TOKEN" "$KUBE_API/readyz" >/dev/null \
    || { echo "the API server did not become ready" >&2; tail -20 "$dir/apiserver.log" >&2; return 1; }
  cat >"$dir/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters: [{ name: e2e, cluster: { server: "$KUBE_API", certificate-authority: "$KUBE_CA" } }]
users: [{ name: admin, user: { token: "$KUBE_TOKEN" } }]
contexts: [{ name: e2e, context: { cluster: e2e, user: admin, namespace: default } }]
current-context: e2e
KUBECONFIG
  KUBE_BIN=$bin
  export KUBE_API KUBE_TOKEN KUBE_CA KUBE_BIN KUBECONFIG="$dir/kubeconfig"
}

# kubectl ARGS...: kubectl 1.20.2, built from the control plane's source
# (scripts/k8s-control-plane.sh), against the cluster of start_control_plane.
kubectl() { "$KUBE_BIN/kubectl" "$@"; }

# kube METHOD PATH [BODY_FILE [CONTENT_TYPE]]: the response body; the HTTP status in
# KUBE_STATUS (so redirect the body to a file rather than capturing it with $(...),
# which would run kube in a subshell and lose KUBE_STATUS).
kube() {
  local method=$1 path=$2 body=${3:-} type=${4:-application/json} out
  out=$(mktemp)
  if [ -n "$body" ]; then
    KUBE_STATUS=$(curl -s -o "$out" -w '%{http_code}' --cacert "$KUBE_CA" -H "Authorization: Bearer $KUBE_TOKEN" \
      -X "$method" -H "Content-Type: $type" --data-binary "@$body" "$KUBE_API$path")
  else
    KUBE_STATUS=$(curl -s -o "$out" -w '%{http_code}' --cacert "$KUBE_CA" -H "Authorization: Bearer $KUBE_TOKEN" \
      -X "$method" "$KUBE_API$path")
  fi
  cat "$out"; rm -f "$out"
}

# start_controller_manager DIR: Deployments make ReplicaSets and Pods; owner references are
# garbage-collected. (After start_control_plane.)
start_controller_manager() {
  local dir=$1 bin
  bin=$(bash "$(dirname "${BASH_SOURCE[0]}")/../scripts/k8s-control-plane.sh")
  "$bin/kube-controller-manager" --kubeconfig "$dir/kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$(free_port)" --port 0 \
    --service-account-private-key-file "$dir/pki/sa.key" --root-ca-file "$KUBE_CA" \
    --use-service-account-credentials=false --leader-elect=false \
    --controllers '*,-nodeipam,-nodelifecycle,-attachdetach,-persistentvolume-binder,-persistentvolume-expander' \
    >"$dir/controller-manager.log" 2>&1 &
  CONTROLLER_MANAGER_PID=$!
}

# stop_pid PID: stops a process started here (its exit status, 143 after SIGTERM, is not a failure).
stop_pid() {
  [ -n "${1:-}" ] || return 0
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

stop_control_plane() {
  stop_pid "${CONTROLLER_MANAGER_PID:-}"
  stop_pid "${APISERVER_PID:-}"
  stop_pid "${ETCD_PID:-}"
  CONTROLLER_MANAGER_PID=; APISERVER_PID=; ETCD_PID=
}
