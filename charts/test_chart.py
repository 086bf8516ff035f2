"""Lints and renders charts/weir-operator with the real Helm engine (PyPI's
helm-python-sdk, Helm's Go SDK through its C ABI; no helm binary), and
validates every rendered manifest against Kubernetes' schemas
(kubernetes-validate, strict: unknown fields are errors).

    python charts/test_chart.py      # prints `ok - ...` per check; exits non-zero on the first failure

scripts/test-deps.sh installs both packages into ~/.cache/weir-test/venv.
"""

import pathlib
import sys

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "weir-operator"
KUBE_VERSION = "1.25.0"  # the oldest schema kubernetes-validate bundles; the chart uses only GA APIs of 1.20


def fail(message):
    print(f"not ok - {message}", file=sys.stderr)
    sys.exit(1)


def render(values=None):
    chart = helm.Chart.load(str(CHART))
    manifests = chart.render(values=values or {}, name="weir", namespace="weir-system", is_install=True)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return objects


def by_kind(objects):
    """The objects by kind; of several of a kind, the one named after the release."""
    kinds = {}
    for o in objects:
        if o["kind"] not in kinds or not o["metadata"]["name"].endswith("-leader-election"):
            kinds[o["kind"]] = o
    return kinds


report = helm.lint(str(CHART), strict=True, kube_version="v1.20.0")
problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + report.get("errors", [])
if problems:
    fail(f"helm lint --strict: {problems}")
print("ok - helm lint --strict passes")

for values, label in [({}, "default values"), ({"watchNamespace": "jobs", "jobmanagerAccess": "proxy"}, "one watched namespace")]:
    objects = render(values)
    for o in objects:
        try:
            kubernetes_validate.validate(o, KUBE_VERSION, strict=True)
        except Exception as e:  # the library raises several types; any is a failure
            fail(f"{label}: {o['kind']} {o['metadata']['name']} does not validate: {e}")
    kinds = by_kind(objects)
    print(f"ok - {label}: {len(objects)} manifests render and validate strictly ({', '.join(sorted(kinds))})")

    deployment = kinds["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    sc, psc = container["securityContext"], pod["securityContext"]
    if not (psc.get("runAsNonRoot") and sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
            and sc.get("capabilities", {}).get("drop") == ["ALL"] and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"):
        fail(f"{label}: the operator's security context is not restrictive: pod {psc}, container {sc}")
    args = container["args"]
    role_kind = "Role" if values.get("watchNamespace") else "ClusterRole"
    if role_kind not in kinds or f"{role_kind}Binding" not in kinds:
        fail(f"{label}: expected a {role_kind} and its binding, got {sorted(kinds)}")
    if values.get("watchNamespace"):
        election = [o for o in objects if o["metadata"]["name"].endswith("-leader-election")]
        if sorted(o["kind"] for o in election) != ["Role", "RoleBinding"] or any(o["metadata"]["namespace"] != "weir-system" for o in election):
            fail(f"{label}: the operator's own Lease needs a Role in its namespace: {election}")
        if args[args.index("--namespace") + 1] != "jobs" or kinds["Role"]["metadata"]["namespace"] != "jobs":
            fail(f"{label}: the operator must watch and be granted only `jobs`: {args}")
    if args[1:3] != ["--jobmanager-access", values.get("jobmanagerAccess", "service")]:
        fail(f"{label}: {args}")
    pod_annotations = kinds["Deployment"]["spec"]["template"]["metadata"].get("annotations", {})
    scrape = (pod_annotations.get("prometheus.io/scrape"), pod_annotations.get("prometheus.io/path"))
    if scrape != ("true", "/metrics") or pod_annotations.get("prometheus.io/port") != str(values.get("metrics", {}).get("port", 8080)):
        fail(f"{label}: Prometheus must find the operator's /metrics by its pod annotations: {pod_annotations}")
    if "--leader-lease" not in args or container["readinessProbe"]["httpGet"]["path"] != "/readyz":
        fail(f"{label}: leader election and the readiness probe are on by default: {args}")
    rules = kinds[role_kind]["rules"]
    for rule in rules:
        if "*" in rule["verbs"] or "*" in rule["resources"] or "*" in rule.get("apiGroups", []):
            fail(f"{label}: a wildcard rule is not least privilege: {rule}")
        if "pods/exec" in rule["resources"]:
            fail(f"{label}: the operator needs no {rule['resources']}")
        # Each job's own Secret: made once and read; never listed, changed or deleted.
        if "secrets" in rule["resources"] and (rule["resources"] != ["secrets"] or sorted(rule["verbs"]) != ["create", "get"]):
            fail(f"{label}: the operator may only get and create secrets: {rule}")
        if "pods" in rule["resources"] and (rule["resources"] != ["pods"] or rule["verbs"] != ["list"]):
            fail(f"{label}: the operator may only list pods: {rule}")
    proxy = any("services/proxy" in r["resources"] for r in rules)
    if proxy != (values.get("jobmanagerAccess") == "proxy"):
        fail(f"{label}: services/proxy is granted exactly when the proxy is used")
    binding = kinds[f"{role_kind}Binding"]
    if binding["subjects"][0]["name"] != kinds["ServiceAccount"]["metadata"]["name"]:
        fail(f"{label}: the binding names another ServiceAccount")
    print(f"ok - {label}: a restrictive security context, least-privilege {role_kind} bound to the operator's ServiceAccount")

chart = helm.Chart.load(str(CHART))
crds = {c["filename"]: c["data"] for c in chart.crds}
committed = (ROOT / "crds" / "streamjobs.weir.dev.yaml").read_text()
if list(crds.values()) != [committed]:
    fail("the chart's crds/ must hold exactly crds/streamjobs.weir.dev.yaml (copy it when the CRD changes)")
print("ok - the chart ships the committed StreamJob CRD")

for bad, field in [
    ({"jobmanagerAccess": "sometimes"}, "jobmanagerAccess"),
    ({"imge": {}}, "imge"),
    ({"replicaCount": 2, "leaderElection": {"enabled": False}}, "leaderElection.enabled"),
]:
    try:
        render(bad)
    except helm.HelmError as e:
        if field not in str(e):
            fail(f"the refusal of {bad} does not name {field}: {e}")
    else:
        fail(f"the values schema accepted {bad}")
print("ok - bad values are refused, naming them: a bad jobmanagerAccess, unknown keys, two replicas without leader election")
print("chart: all checks passed")
