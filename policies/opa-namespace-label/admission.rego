# A context-aware OPA-mode policy: rejects objects whose Namespace lacks the label named by the
# `required_namespace_label` setting. The host provides the Namespaces as
# `data.kubernetes.namespaces.<name>` because the policy declares v1/Namespace in its
# contextAwareResources.
package kubernetes.admission

deny contains msg if {
	namespace := input.request.namespace
	namespace != ""
	not data.kubernetes.namespaces[namespace].metadata.labels[data.required_namespace_label]
	msg := sprintf("namespace %v lacks the label %v", [namespace, data.required_namespace_label])
}
