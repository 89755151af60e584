# An OPA-mode Kubewarden policy (the layout of upstream's Rego policies): rejects objects
# carrying a label listed in the `denied_labels` setting. The policy's settings are `data`,
# the AdmissionRequest is `input.request`.
package kubernetes.admission

deny contains msg if {
	some label in data.denied_labels
	input.request.object.metadata.labels[label]
	msg := sprintf("label %v is not allowed", [label])
}

# The `behaviour` setting makes the policy misbehave, to test the evaluator's limits.
deny contains "never reached" if {
	data.behaviour == "allocate"
	count([x | some x in numbers.range(1, 100000000)]) == 0
}

deny contains "never reached" if {
	data.behaviour == "spin"
	count([i | some i in numbers.range(1, 30000); some j in numbers.range(1, 30000); i == j + 1000000]) > 0
}
