# A ConstraintTemplate's Rego in the style of the Gatekeeper library's required-labels
# template: every label listed in `parameters.labels` must be present, and match its
# `allowedRegex` when one is given; `parameters.message` replaces the default message.
#
# Built twice (xtask/src/policies.rs): with the entrypoint `k8srequiredlabels/violation`, the
# result is the list of violations Gatekeeper expects; with the entrypoint
# `k8srequiredlabels` (the package), it is the package's document, an object holding that
# list, which upstream Kubewarden reads as "no violations".
package k8srequiredlabels

message(default_message) := input.parameters.message if {
	input.parameters.message
} else := default_message

violation contains {"msg": message(default_message), "details": {"missing_labels": missing}} if {
	provided := {label | input.review.object.metadata.labels[label]}
	required := {label | some wanted in input.parameters.labels; label := wanted.key}
	missing := required - provided
	count(missing) > 0
	default_message := sprintf("you must provide labels: %v", [sort(missing)])
}

violation contains {"msg": message(default_message)} if {
	some wanted in input.parameters.labels
	value := input.review.object.metadata.labels[wanted.key]
	wanted.allowedRegex != ""
	not regex.match(wanted.allowedRegex, value)
	default_message := sprintf("label <%v: %v> does not satisfy allowed regex: %v", [wanted.key, value, wanted.allowedRegex])
}
