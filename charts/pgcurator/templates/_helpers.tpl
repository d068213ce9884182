{{- define "pgcurator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pgcurator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pgcurator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pgcurator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pgcurator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "pgcurator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "pgcurator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pgcurator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pgcurator.leaseName" -}}
{{- default (printf "%s-leader" (include "pgcurator.fullname" .)) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The plural of every CRD shipped in crds/: the RBAC rules follow the CRDs, never lag them. */}}
{{- define "pgcurator.plurals" -}}
{{- range $path, $_ := .Files.Glob "crds/*.yaml" }}
{{- $crd := $.Files.Get $path | fromYaml }}
- {{ $crd.spec.names.plural }}
{{- end }}
{{- end }}

{{- define "pgcurator.statusPlurals" -}}
{{- range $path, $_ := .Files.Glob "crds/*.yaml" }}
{{- $crd := $.Files.Get $path | fromYaml }}
- {{ $crd.spec.names.plural }}/status
{{- end }}
{{- end }}
