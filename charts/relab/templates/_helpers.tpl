{{/* The chart's name. */}}
{{- define "relab.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped name: the release name if it contains "relab", else <release>-relab. */}}
{{- define "relab.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "relab.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "relab.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: relab
{{- end -}}

{{- define "relab.selectorLabels" -}}
app.kubernetes.io/name: {{ include "relab.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "relab.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "relab.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "relab.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "relab.labImage" -}}
{{- printf "%s:%s" .Values.lab.image.repository (default .Chart.AppVersion .Values.lab.image.tag) -}}
{{- end -}}

{{/* The operator's permissions on the experiments and their children (a Role's or ClusterRole's rules). */}}
{{- define "relab.rules" -}}
- apiGroups: [relab.dev]
  resources: [reliabilityexperiments]
  verbs: [get, list, watch]
- apiGroups: [relab.dev]
  resources: [reliabilityexperiments/status]
  verbs: [get, update, patch]
# a run's Deployments, Services, ConfigMaps and PVCs are applied and deleted,
# not watched (docs/operator.md); its Jobs are watched for their outcome
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, create, patch, delete]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services, configmaps, persistentvolumeclaims]
  verbs: [get, list, create, patch, delete]
# pods: delete for spec.disruptions' kills (order-service pods, grace 0)
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, delete]
# live progress: the order service's /metrics through the API server's service
# proxy; the load generator's own stage (GET /progress) through the pod proxy,
# and the kills reported to it (POST /disruptions/{name}: create)
- apiGroups: [""]
  resources: [services/proxy]
  verbs: [get]
- apiGroups: [""]
  resources: [pods/proxy]
  verbs: [get, create]
# spec.notify.webhook: the URL lives in a Secret (get only: never list or watch)
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch, update]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch, update]
{{- end -}}
