"""The e2e node agent: the scheduler and the kubelet of a one-node test cluster.

It plays the parts of a node that the Weir operator's pods use, against the
real API server of e2e/control-plane.sh:

* scheduler: every pending pod is bound to this node (`node-1`);
* kubelet: each pod gets its own loopback address (127.0.x.y, its pod IP) and
  each container runs from its image with runc (e2e/containers.py: the
  image's entrypoint, env and user as the pod's spec and security context
  amend them, a read-only root where asked, the pod's volumes (ConfigMap,
  Secret, emptyDir) at their mount paths and /etc/hosts the pod's);
* env: `value`, `valueFrom` (fieldRef metadata.name, metadata.namespace,
  status.podIP; secretKeyRef; configMapKeyRef) and `envFrom` (secretRef,
  configMapRef), and `$(VAR)` in args expanded as the kubelet does;
* readiness probes (httpGet on the pod IP), restart policy (Always: a
  container that exits is started again, with a short backoff), pod status
  (phase, podIP, container statuses, the Ready condition) written back, with
  what a kubelet says of a container that does not run: `ErrImagePull` for an
  image it has no executable for, `CreateContainerConfigError` for a missing
  ConfigMap or Secret, `CrashLoopBackOff` with the last exit code (and, under
  `terminationMessagePolicy: FallbackToLogsOnError`, the tail of its log);
* termination: a deleted pod's processes get SIGTERM, then SIGKILL after the
  grace period, and the pod is removed;
* cluster DNS, as far as the pods need it: each pod's /etc/hosts maps every
  Service of its namespace (`svc`, `svc.ns`, `svc.ns.svc`,
  `svc.ns.svc.cluster.local`) to a ready pod behind it, and is kept current.

Images are OCI layouts, one directory per repository holding its tags as
refs (scripts/images.sh writes them):

    python3 e2e/node_agent.py --images DIR --share /var/tmp/e2e --work DIR

`--share PATH` mounts PATH into every container (the e2e's directory, where
file sinks write what the test reads: a node's local disk). The fallback,
without images: `--image weir=/path/to/weir` runs (a copy in the work
directory of) that file as a local process in a mount namespace of its own,
for any image whose repository is `weir`.

Environment: KUBE_API, KUBE_TOKEN, KUBE_CA (as control-plane.sh exports them).
"""

import argparse
import base64
import json
import os
import signal
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from containers import ImageError, ProcessRuntime, RuncRuntime, expand

NODE = "node-1"


class Api:
    def __init__(self):
        self.base = os.environ["KUBE_API"]
        self.token = os.environ["KUBE_TOKEN"]
        self.ctx = ssl.create_default_context(cafile=os.environ["KUBE_CA"])

    def call(self, method, path, body=None, content_type="application/json"):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=10) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def get(self, path):
        status, body = self.call("GET", path)
        return body if status == 200 else None


def log(message):
    print(f"node-agent: {message}", file=sys.stderr, flush=True)


class Container:
    def __init__(self, spec):
        self.spec = spec
        self.process = None
        self.restarts = 0
        self.started_at = None
        self.next_start = 0.0
        self.ready = False
        self.exit_code = None
        # Why it does not run, as a kubelet says it: (reason, message), or None.
        self.waiting = None
        # How it last ended: (exit code, message), or None.
        self.last = None


class Pod:
    def __init__(self, obj, ip, directory):
        self.uid = obj["metadata"]["uid"]
        self.ns = obj["metadata"]["namespace"]
        self.name = obj["metadata"]["name"]
        self.obj = obj
        self.ip = ip
        self.dir = directory
        self.hosts = os.path.join(directory, "hosts")
        self.containers = [Container(c) for c in obj["spec"]["containers"]]
        self.terminating_since = None
        self.reported = None


class Agent:
    def __init__(self, runtime, work):
        self.api = Api()
        self.runtime = runtime
        self.work = work
        self.pods = {}
        self.next_ip = 2

    # --- the node -------------------------------------------------------
    def register(self):
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
        }
        status, body = self.api.call("POST", "/api/v1/nodes", node)
        if status not in (201, 409):
            raise SystemExit(f"node-agent: cannot register {NODE}: {status} {body}")
        self.heartbeat()

    def heartbeat(self):
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        status = {"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "e2e node agent",
                            "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE}],
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "250"},
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "250"},
        }}
        self.api.call("PATCH", f"/api/v1/nodes/{NODE}/status", status, "application/merge-patch+json")

    # --- scheduling ------------------------------------------------------
    def bind(self, pod):
        meta = pod["metadata"]
        binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": meta["name"]},
                   "target": {"apiVersion": "v1", "kind": "Node", "name": NODE}}
        status, body = self.api.call("POST", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding", binding)
        if status == 201:
            log(f"bound {meta['namespace']}/{meta['name']} to {NODE}")

    # --- pods --------------------------------------------------------------
    def env_of(self, pod, spec):
        ns = pod.ns
        # The API server as the `kubernetes` Service would route to it (there is no kube-proxy here).
        api = urllib.parse.urlparse(self.api.base)
        env = self.runtime.base_env(spec["image"])
        env.update({"HOSTNAME": pod.name, "WEIR_LOG": os.environ.get("WEIR_LOG", "info"),
                    "KUBERNETES_SERVICE_HOST": api.hostname, "KUBERNETES_SERVICE_PORT": str(api.port or 443)})
        for source in spec.get("envFrom") or []:
            for kind, path in (("secretRef", "secrets"), ("configMapRef", "configmaps")):
                if kind in source:
                    obj = self.api.get(f"/api/v1/namespaces/{ns}/{path}/{source[kind]['name']}")
                    if obj is None:
                        if source[kind].get("optional"):
                            continue
                        raise ValueError(f"envFrom {kind} {source[kind]['name']} does not exist")
                    data = obj.get("data") or {}
                    for k, v in data.items():
                        env[source.get("prefix", "") + k] = base64.b64decode(v).decode() if kind == "secretRef" else v
        for var in spec.get("env") or []:
            if "value" in var:
                env[var["name"]] = expand(var["value"], env)
                continue
            vf = var.get("valueFrom", {})
            if "fieldRef" in vf:
                field = vf["fieldRef"]["fieldPath"]
                env[var["name"]] = {"metadata.name": pod.name, "metadata.namespace": ns, "status.podIP": pod.ip,
                                    "spec.nodeName": NODE}[field]
            elif "secretKeyRef" in vf or "configMapKeyRef" in vf:
                kind = "secretKeyRef" if "secretKeyRef" in vf else "configMapKeyRef"
                ref = vf[kind]
                obj = self.api.get(f"/api/v1/namespaces/{ns}/{'secrets' if kind == 'secretKeyRef' else 'configmaps'}/{ref['name']}")
                value = (obj or {}).get("data", {}).get(ref["key"])
                if value is None:
                    if ref.get("optional"):
                        continue
                    raise ValueError(f"{kind} {ref['name']}/{ref['key']} does not exist")
                env[var["name"]] = base64.b64decode(value).decode() if kind == "secretKeyRef" else value
        return env

    def volumes_of(self, pod):
        """Materialises the pod's volumes under its directory: name -> host path."""
        paths = {}
        for v in pod.obj["spec"].get("volumes") or []:
            path = os.path.join(pod.dir, "volumes", v["name"])
            os.makedirs(path, exist_ok=True)
            if "emptyDir" in v:
                os.chmod(path, 0o1777)  # as a kubelet makes it: writable by the pod's user
            for kind, res in (("configMap", "configmaps"), ("secret", "secrets")):
                if kind in v:
                    name = v[kind].get("name") or v[kind].get("secretName")
                    obj = self.api.get(f"/api/v1/namespaces/{pod.ns}/{res}/{name}")
                    if obj is None:
                        raise ValueError(f"{kind} volume {v['name']}: {name} does not exist")
                    for key, value in (obj.get("data") or {}).items():
                        with open(os.path.join(path, key), "wb") as f:
                            f.write(base64.b64decode(value) if kind == "secret" else value.encode())
            paths[v["name"]] = path
        return paths

    def start(self, pod, c):
        env = self.env_of(pod, c.spec)
        volumes = self.volumes_of(pod)
        with open(os.path.join(pod.dir, f"{c.spec['name']}.log"), "ab") as out:
            c.process, what = self.runtime.start(pod, c.spec, env, volumes, out)
        c.started_at = time.time()
        c.ready = False
        log(f"{pod.ns}/{pod.name} {c.spec['name']}: started {what} (pid {c.process.pid}, pod IP {pod.ip})")

    def probe(self, pod, c):
        probe = c.spec.get("readinessProbe")
        if probe is None:
            return c.process is not None and c.process.poll() is None
        get = probe.get("httpGet")
        if get is None:
            return True
        port = get["port"]
        if isinstance(port, str):
            port = next(p["containerPort"] for p in c.spec.get("ports", []) if p.get("name") == port)
        try:
            with urllib.request.urlopen(f"http://{pod.ip}:{port}{get.get('path', '/')}", timeout=1) as r:
                return 200 <= r.status < 400
        except Exception:
            return False

    def create(self, obj):
        ip = f"127.0.{self.next_ip // 250 + 1}.{self.next_ip % 250 + 2}"
        self.next_ip += 1
        directory = os.path.join(self.work, "pods", f"{obj['metadata']['namespace']}_{obj['metadata']['name']}")
        os.makedirs(directory, exist_ok=True)
        pod = Pod(obj, ip, directory)
        open(pod.hosts, "w").write("127.0.0.1 localhost\n")
        self.pods[pod.uid] = pod
        return pod

    def terminate(self, pod, grace):
        for c in pod.containers:
            if c.process and c.process.poll() is None:
                if pod.terminating_since is None:
                    self.runtime.signal(c.process, getattr(c.process, "handle", None), signal.SIGTERM)
                elif time.time() - pod.terminating_since > grace:
                    self.runtime.signal(c.process, getattr(c.process, "handle", None), signal.SIGKILL)
        if pod.terminating_since is None:
            pod.terminating_since = time.time()
        return all(c.process is None or c.process.poll() is not None for c in pod.containers)

    def write_hosts(self, services, endpoints):
        for pod in self.pods.values():
            lines = ["127.0.0.1 localhost", f"{pod.ip} {pod.name}"]
            for svc in services:
                n, ns = svc["metadata"]["name"], svc["metadata"]["namespace"]
                ip = endpoints.get((ns, n))
                if ip:
                    # The short name resolves in the pod's own namespace, as a search domain would make it.
                    short = f"{n} " if ns == pod.ns else ""
                    lines.append(f"{ip} {short}{n}.{ns} {n}.{ns}.svc {n}.{ns}.svc.cluster.local")
            text = "\n".join(lines) + "\n"
            if open(pod.hosts).read() != text:
                with open(pod.hosts, "r+") as f:  # in place: the file is bind-mounted by inode
                    f.truncate(0)
                    f.write(text)

    def termination_message(self, pod, c):
        """What a kubelet keeps of how a container ended: under
        FallbackToLogsOnError and a failure, the tail of its log (80 lines, 2 KiB)."""
        if c.exit_code == 0 or c.spec.get("terminationMessagePolicy") != "FallbackToLogsOnError":
            return ""
        try:
            with open(os.path.join(pod.dir, f"{c.spec['name']}.log"), "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 2048))
                return "\n".join(f.read().decode(errors="replace").splitlines()[-80:])
        except OSError:
            return ""

    def report(self, pod):
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        statuses = []
        for c in pod.containers:
            running = c.process is not None and c.process.poll() is None
            if running:
                state = {"running": {"startedAt": now}}
            elif c.waiting:
                state = {"waiting": {"reason": c.waiting[0], "message": c.waiting[1]}}
            else:
                state = {"waiting": {"reason": "ContainerCreating"}}
            status = {"name": c.spec["name"], "image": c.spec["image"], "imageID": "", "ready": c.ready,
                      "restartCount": c.restarts, "started": running, "state": state}
            if c.last is not None:
                status["lastState"] = {"terminated": {"exitCode": c.last[0], "message": c.last[1],
                                                      "reason": "Completed" if c.last[0] == 0 else "Error"}}
            statuses.append(status)
        ready = all(s["ready"] for s in statuses)
        key = json.dumps([statuses, ready], sort_keys=True, default=str).replace(now, "")
        if key == pod.reported:
            return
        status = {"status": {
            "phase": "Running", "podIP": pod.ip, "podIPs": [{"ip": pod.ip}], "hostIP": "127.0.0.1",
            "conditions": [{"type": t, "status": "True" if (ready or t == "PodScheduled") else "False", "lastTransitionTime": now}
                           for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
            "containerStatuses": statuses,
        }}
        code, body = self.api.call("PATCH", f"/api/v1/namespaces/{pod.ns}/pods/{pod.name}/status", status, "application/merge-patch+json")
        if code == 200:
            pod.reported = key

    def tick(self):
        listed = self.api.get("/api/v1/pods")
        if listed is None:
            return
        seen = set()
        for obj in listed["items"]:
            meta, spec = obj["metadata"], obj["spec"]
            if not spec.get("nodeName"):
                if not meta.get("deletionTimestamp"):
                    self.bind(obj)
                continue
            if spec["nodeName"] != NODE:
                continue
            seen.add(meta["uid"])
            pod = self.pods.get(meta["uid"]) or self.create(obj)
            pod.obj = obj
            if meta.get("deletionTimestamp"):
                grace = meta.get("deletionGracePeriodSeconds") or 30
                if self.terminate(pod, grace):
                    self.api.call("DELETE", f"/api/v1/namespaces/{pod.ns}/pods/{pod.name}", {"gracePeriodSeconds": 0})
                    log(f"{pod.ns}/{pod.name}: terminated")
                continue
            for c in pod.containers:
                exited = c.process is not None and c.process.poll() is not None
                if exited and c.exit_code is None:
                    c.exit_code = c.process.returncode
                    log(f"{pod.ns}/{pod.name} {c.spec['name']}: exited with {c.exit_code}")
                    c.last = (c.exit_code, self.termination_message(pod, c))
                    policy = spec.get("restartPolicy", "Always")
                    if policy == "Always" or (policy == "OnFailure" and c.exit_code != 0):
                        c.restarts += 1
                        c.next_start = time.time() + min(10, 0.5 * 2 ** min(c.restarts, 5))
                        c.waiting = ("CrashLoopBackOff", f"back-off restarting failed container {c.spec['name']}")
                if (c.process is None or (c.exit_code is not None and c.next_start and time.time() >= c.next_start)):
                    c.exit_code, c.next_start = None, 0.0
                    try:
                        self.start(pod, c)
                        c.waiting = None
                    except (ValueError, KeyError, OSError) as e:
                        log(f"{pod.ns}/{pod.name} {c.spec['name']}: cannot start: {e}")
                        c.next_start = time.time() + 2
                        c.exit_code = -1
                        c.waiting = ("ErrImagePull" if isinstance(e, ImageError) else "CreateContainerConfigError", str(e))
                c.ready = c.process is not None and c.process.poll() is None and self.probe(pod, c)
            self.report(pod)
        for uid in [u for u in self.pods if u not in seen]:
            pod = self.pods.pop(uid)
            self.terminate(pod, 0)
            for c in pod.containers:
                if c.process and c.process.poll() is None:
                    self.runtime.signal(c.process, getattr(c.process, "handle", None), signal.SIGKILL)
            log(f"{pod.ns}/{pod.name}: gone from the API; its processes are stopped")
        services = (self.api.get("/api/v1/services") or {}).get("items", [])
        endpoints = {}
        for svc in services:
            selector = svc["spec"].get("selector")
            if not selector:
                continue
            for pod in self.pods.values():
                labels = pod.obj["metadata"].get("labels", {})
                if pod.ns == svc["metadata"]["namespace"] and all(labels.get(k) == v for k, v in selector.items()) \
                        and pod.containers and all(c.ready for c in pod.containers) and pod.terminating_since is None:
                    endpoints[(pod.ns, svc["metadata"]["name"])] = pod.ip
        self.write_hosts(services, endpoints)

    def stop(self):
        for pod in self.pods.values():
            for c in pod.containers:
                if c.process and c.process.poll() is None:
                    self.runtime.signal(c.process, getattr(c.process, "handle", None), signal.SIGKILL)
        for pod in self.pods.values():
            for c in pod.containers:
                if c.process:
                    try:
                        c.process.wait(timeout=5)
                    except Exception:
                        pass
        self.runtime.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", help="a directory of OCI layouts, one per repository: containers run with runc")
    parser.add_argument("--share", action="append", default=[], help="a directory mounted into every container")
    parser.add_argument("--image", action="append", default=[], help="REPOSITORY=EXECUTABLE: local processes instead")
    parser.add_argument("--work", required=True)
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    if args.images:
        runtime = RuncRuntime(os.path.abspath(args.images), os.path.abspath(args.work), args.share)
    else:
        runtime = ProcessRuntime(dict(i.split("=", 1) for i in args.image), args.work)
    agent = Agent(runtime, args.work)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    agent.register()
    log(f"{NODE} ready: {runtime.describe()}")
    last_heartbeat = time.time()
    try:
        while not stopping:
            try:
                agent.tick()
            except (urllib.error.URLError, OSError, ValueError) as e:
                log(f"tick: {e}")
            if time.time() - last_heartbeat > 10:
                agent.heartbeat()
                last_heartbeat = time.time()
            time.sleep(0.3)
    finally:
        agent.stop()


if __name__ == "__main__":
    main()
