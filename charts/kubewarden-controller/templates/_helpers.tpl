{{/* Name of the controller objects. */}}
{{- define "kubewarden-controller.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubewarden-controller.selectorLabels" -}}
app.kubernetes.io/name: kubewarden-controller
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kubewarden-controller.labels" -}}
{{ include "kubewarden-controller.selectorLabels" . }}
app.kubernetes.io/component: kubewarden-controller
app.kubernetes.io/part-of: kubewarden
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "kubewarden-controller.image" -}}
{{- $registry := .Values.global.cattle.systemDefaultRegistry -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if $registry -}}
{{ printf "%s/%s:%s" $registry .Values.image.repository $tag }}
{{- else -}}
{{ printf "%s:%s" .Values.image.repository $tag }}
{{- end -}}
{{- end -}}

{{/* Affinity of the controller: its own, else the global one. */}}
{{- define "kubewarden-controller.affinity" -}}
{{- if .Values.affinity -}}
{{ toYaml .Values.affinity }}
{{- else if .Values.global.affinity -}}
{{ toYaml .Values.global.affinity }}
{{- end -}}
{{- end -}}
