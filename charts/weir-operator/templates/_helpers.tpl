{{- define "weir-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "weir-operator.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "weir-operator.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "weir-operator.serviceAccountName" -}}
{{- default (include "weir-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* What the operator does to each job's objects, and nothing more. */}}
{{- define "weir-operator.rules" -}}
- apiGroups: ["weir.dev"]
  resources: ["streamjobs"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["weir.dev"]
  resources: ["streamjobs/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["configmaps", "services", "serviceaccounts"]
  verbs: ["get", "list", "create", "patch", "update", "delete"]
# Each job's secret: made once, read to authenticate to its REST API; never listed or changed.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create"]
# The jobs' pods, listed (never changed) to say why a JobManager does not answer.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# Each job's NetworkPolicy: only its own pods (and the operator) reach its ports.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "patch", "update", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "create", "patch", "update", "delete"]
# Each job's JobManagers elect their leader with a Lease; the operator grants
# them that through a Role, so it must hold the same permission itself.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update", "patch"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if eq .Values.jobmanagerAccess "proxy" }}
- apiGroups: [""]
  resources: ["services/proxy"]
  verbs: ["get", "create"]
{{- end }}
{{- end -}}
