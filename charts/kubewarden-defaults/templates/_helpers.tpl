{{- define "kubewarden-defaults.labels" -}}
app.kubernetes.io/part-of: kubewarden
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.additionalLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* `annotations:` with additionalAnnotations, at the indentation of the metadata's keys; nothing when none. */}}
{{- define "kubewarden-defaults.annotations" -}}
{{- with .Values.additionalAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
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

{{/* Module reference of a recommended policy: `module` is upstream's {repository, tag} or
this chart's earlier "repository:tag" string. */}}
{{- define "kubewarden-defaults.module" -}}
{{- $registry := .root.Values.recommendedPolicies.defaultPoliciesRegistry | default .root.Values.global.cattle.systemDefaultRegistry -}}
{{- $module := .policy.module -}}
{{- if kindIs "map" $module -}}
{{- $module = printf "%s:%s" (required (printf "recommendedPolicies: %s.module.repository is required" .policy.name) $module.repository) (required (printf "recommendedPolicies: %s.module.tag is required" .policy.name) $module.tag) -}}
{{- end -}}
{{- if $registry -}}
registry://{{ $registry }}/{{ $module }}
{{- else -}}
registry://{{ $module }}
{{- end -}}
{{- end -}}

{{/*
A recommended ClusterAdmissionPolicy. Arguments: root, policy (its values), mutating,
rules (a list), settings (used when the policy's values have none), overrides (settings made
from this chart's earlier keys, such as hostPathsPolicy.paths, which win when given).
*/}}
{{- define "kubewarden-defaults.recommendedPolicy" -}}
{{- $mode := .root.Values.recommendedPolicies.defaultPolicyMode -}}
apiVersion: {{ .root.Values.crdVersion }}
kind: ClusterAdmissionPolicy
metadata:
  name: {{ .policy.name }}
  labels:
    {{- include "kubewarden-defaults.labels" .root | nindent 4 }}
    app.kubernetes.io/component: policy
  annotations:
    {{- with .root.Values.additionalAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
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
    {{- toYaml .rules | nindent 4 }}
  namespaceSelector:
    matchExpressions:
      - key: kubernetes.io/metadata.name
        operator: NotIn
        values:
          {{- toYaml (concat .root.Values.global.skipNamespaces .root.Values.recommendedPolicies.skipAdditionalNamespaces) | nindent 10 }}
  settings:
    {{- $settings := hasKey .policy "settings" | ternary .policy.settings .settings | default dict }}
    {{- toYaml (merge (deepCopy (.overrides | default dict)) (deepCopy $settings)) | nindent 4 }}
{{- end -}}
