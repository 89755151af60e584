# A context-aware Gatekeeper-mode policy: a violation when the reviewed object's Namespace
# (from Gatekeeper's inventory, `data.inventory.cluster["v1"].Namespace`) lacks the label named
# by the `required_namespace_label` parameter.
package k8snamespacelabel

violation contains {"msg": msg} if {
	namespace := input.review.namespace
	namespace != ""
	label := input.parameters.required_namespace_label
	not data.inventory.cluster.v1.Namespace[namespace].metadata.labels[label]
	msg := sprintf("namespace %v lacks the label %v", [namespace, label])
}
