{{/* Chart name, overridable. */}}
{{- define "selftaught.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, or the release name when it already contains the chart name. */}}
{{- define "selftaught.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "selftaught.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object of the release. */}}
{{- define "selftaught.labels" -}}
helm.sh/chart: {{ include "selftaught.chart" . }}
app.kubernetes.io/name: {{ include "selftaught.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: selftaught
{{- end }}

{{/* Labels of the operator's own objects (Deployment, pod, Services, ServiceAccount). */}}
{{- define "selftaught.operatorLabels" -}}
{{ include "selftaught.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Selector labels of the operator pod. component=operator: stage pods carry
app.kubernetes.io/name=selftaught too, and must never match the operator's selectors. */}}
{{- define "selftaught.selectorLabels" -}}
app.kubernetes.io/name: {{ include "selftaught.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "selftaught.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "selftaught.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference from {repository, tag, digest}; the tag defaults to appVersion. */}}
{{- define "selftaught.image" -}}
{{- $image := index . 0 }}
{{- $context := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $context.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/* Namespaces the operator watches when not cluster-wide. */}}
{{- define "selftaught.watchNamespaces" -}}
{{- if .Values.watchNamespaces }}
{{- toJson .Values.watchNamespaces }}
{{- else }}
{{- toJson (list .Release.Namespace) }}
{{- end }}
{{- end }}

{{/* The operator's permissions, for the ClusterRole and each Role: exactly the calls of
controller/kube.py and what Kopf itself needs (tests/shipping checks both ways). Nothing on
Secrets (stage pods read them by reference), CRDs, namespaces or KopfPeering (scanning off,
standalone). */}}
{{- define "selftaught.rules" -}}
# get: a fresh read of a run; list/watch: Kopf's watch; patch: Kopf's own bookkeeping (no
# finalizers: the resync is not a Kopf timer)
- apiGroups: ["selftaught.dev"]
  resources: ["selftaughtruns"]
  verbs: ["get", "list", "watch", "patch"]
# the operator writes the status (merge patch), never the spec
- apiGroups: ["selftaught.dev"]
  resources: ["selftaughtruns/status"]
  verbs: ["patch"]
# stage Jobs carry an ownerReference to their run, and a training attempt's Service one to its
# Job, with blockOwnerDeletion: clusters with the OwnerReferencesPermissionEnforcement admission
# plugin (e.g. OpenShift) require update on the owner's finalizers for that
- apiGroups: ["selftaught.dev"]
  resources: ["selftaughtruns/finalizers"]
  verbs: ["update"]
- apiGroups: ["batch"]
  resources: ["jobs/finalizers"]
  verbs: ["update"]
# one Job per stage attempt: created, watched (Kopf), listed, and deleted when an attempt is
# given up (e.g. pods that never start)
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["list", "watch", "create", "delete"]
# a headless Service per multi-node training attempt (it goes with its Job), and the judge's
# server's Service (spec.serve), deleted when serve is turned off
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create", "delete"]
# the judge's server (spec.serve): created, watched (Kopf: its readiness), replaced when the served
# checkpoint changes, deleted when serve is turned off
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "create", "update", "delete"]
# read-only: a failed pod's termination message is the stage's failure reason, a pending pod's
# status why an attempt (or the judge's server) does not start; stage pods are watched (Kopf) for
# how they stop: a disrupted pod (spot reclaim, drain, preemption) is gone once replaced
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# events on runs (ours and Kopf's); listed: the Job controller's FailedCreate events say why a
# Job has no pods
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list", "create", "patch"]
{{- end }}
