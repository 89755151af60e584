# A Gatekeeper-mode policy (a ConstraintTemplate's Rego): one violation per label listed in
# the `denied_labels` parameter that the reviewed object carries.
package k8sdeniedlabels

violation contains {"msg": msg, "details": {"label": label}} if {
	some label in input.parameters.denied_labels
	input.review.object.metadata.labels[label]
	msg := sprintf("label %v is not allowed", [label])
}
