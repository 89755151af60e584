# The entrypoint (`policy/main`): an AdmissionReview built from `kubernetes.admission.deny`.
package policy

import data.kubernetes.admission

main := {
	"apiVersion": "admission.k8s.io/v1",
	"kind": "AdmissionReview",
	"response": response,
}

default uid := ""

uid := input.request.uid

response := {
	"uid": uid,
	"allowed": false,
	"status": {"message": reason},
} if {
	reason := concat(", ", admission.deny)
	reason != ""
} else := {
	"uid": uid,
	"allowed": true,
}
