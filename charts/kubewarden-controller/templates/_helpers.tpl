{{/* Name of the controller objects. */}}
{{- define "kubewarden-controller.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubewarden-controller.selectorLabels" -}}
app.kubernetes.io/name: {{ .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kubewarden-controller.labels" -}}
{{ include "kubewarden-controller.selectorLabels" . }}
app.kubernetes.io/component: kubewarden-controller
app.kubernetes.io/part-of: kubewarden
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.additionalLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* `annotations:` with additionalAnnotations, at the indentation of the metadata's keys; nothing when none. */}}
{{- define "kubewarden-controller.annotations" -}}
{{- with .Values.additionalAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Image pull secrets, given as names or as {name: ...} like upstream's values. */}}
{{- define "kubewarden-controller.imagePullSecretNames" -}}
{{- $names := list -}}
{{- range .Values.imagePullSecrets -}}
{{- if kindIs "map" . -}}
{{- $names = append $names .name -}}
{{- else -}}
{{- $names = append $names . -}}
{{- end -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}

{{- define "kubewarden-controller.imagePullSecrets" -}}
{{- with (include "kubewarden-controller.imagePullSecretNames" .) }}
imagePullSecrets:
  {{- range (splitList "," .) }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* Security context of the controller and audit-scanner containers: this chart's earlier
`securityContext` when set, else upstream's `containerSecurityContext`. */}}
{{- define "kubewarden-controller.containerSecurityContext" -}}
{{- toYaml (.Values.securityContext | default .Values.containerSecurityContext) -}}
{{- end -}}

{{/* Resources of the controller container: this chart's earlier flat `resources.limits` /
`requests` when given (the defaults set neither), else upstream's `resources.controller`. */}}
{{- define "kubewarden-controller.resources" -}}
{{- $flat := pick .Values.resources "limits" "requests" -}}
{{- toYaml ($flat | default .Values.resources.controller) -}}
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
