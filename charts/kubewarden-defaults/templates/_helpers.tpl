{{- define "kubewarden-defaults.labels" -}}
app.kubernetes.io/part-of: kubewarden
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "kubewarden-defaults.policyServerName" -}}
{{- .Values.global.policyServer.default.name | default "default" -}}
{{- end -}}

{{- define "kubewarden-defaults.policyServerImage" -}}
{{- $registry := .Values.global.cattle.systemDefaultRegistry -}}
{{- $tag := .Values.policyServer.image.tag | default .Chart.AppVersion -}}
{{- if $registry -}}
{{ printf "%s/%s:%s" $registry .Values.policyServer.image.repository $tag }}
{{- else -}}
{{ printf "%s:%s" .Values.policyServer.image.repository $tag }}
{{- end -}}
{{- end -}}

{{/* Module reference of a recommended policy. */}}
{{- define "kubewarden-defaults.module" -}}
{{- $registry := .root.Values.recommendedPolicies.defaultPoliciesRegistry | default .root.Values.global.cattle.systemDefaultRegistry -}}
{{- if $registry -}}
registry://{{ $registry }}/{{ .module }}
{{- else -}}
registry://{{ .module }}
{{- end -}}
{{- end -}}

{{/*
A recommended ClusterAdmissionPolicy on pods. Arguments: root, name, module, mutating,
settings (a dict).
*/}}
{{- define "kubewarden-defaults.recommendedPolicy" -}}
{{- $mode := .root.Values.recommendedPolicies.defaultPolicyMode -}}
apiVersion: policies.kubewarden.io/v1
kind: ClusterAdmissionPolicy
metadata:
  name: {{ .name }}
  labels:
    {{- include "kubewarden-defaults.labels" .root | nindent 4 }}
  annotations:
    io.kubewarden.policy.category: PSP
    io.kubewarden.policy.severity: medium
spec:
  policyServer: {{ include "kubewarden-defaults.policyServerName" .root }}
  module: {{ include "kubewarden-defaults.module" . }}
  mode: {{ $mode }}
  # Monitor mode never blocks, not even when the policy-server cannot be reached.
  failurePolicy: {{ if eq $mode "monitor" }}Ignore{{ else }}Fail{{ end }}
  mutating: {{ .mutating }}
  backgroundAudit: true
  rules:
    - apiGroups: [""]
      apiVersions: [v1]
      resources: [pods]
      operations: [CREATE, UPDATE]
  namespaceSelector:
    matchExpressions:
      - key: kubernetes.io/metadata.name
        operator: NotIn
        values:
          {{- toYaml (concat .root.Values.global.skipNamespaces .root.Values.recommendedPolicies.skipAdditionalNamespaces) | nindent 10 }}
  settings:
    {{- toYaml .settings | nindent 4 }}
{{- end -}}
