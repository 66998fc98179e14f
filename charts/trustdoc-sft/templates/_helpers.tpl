{{/* Chart name, truncated to the 63-character label limit. */}}
{{- define "trustdoc-sft.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release name already contains the chart name. */}}
{{- define "trustdoc-sft.fullname" -}}
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

{{- define "trustdoc-sft.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: never change across upgrades (Deployment selectors are immutable). */}}
{{- define "trustdoc-sft.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trustdoc-sft.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "trustdoc-sft.labels" -}}
helm.sh/chart: {{ include "trustdoc-sft.chart" . }}
{{ include "trustdoc-sft.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: trustdoc-sft
{{- end }}

{{- define "trustdoc-sft.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "trustdoc-sft.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "trustdoc-sft.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Labels the operator puts on every training and curation pod (see manifests.py). */}}
{{- define "trustdoc-sft.workloadSelector" -}}
app.kubernetes.io/name: trustdoc-sft
app.kubernetes.io/managed-by: trustdoc-sft-operator
{{- end }}
