# A ConstraintTemplate's Rego with the rules of several Gatekeeper library templates at once,
# the way platform teams bundle a pod-security baseline: no privileged containers, no host
# namespaces, no hostPath volumes, images only from `parameters.repos`, and CPU and memory
# limits on every container (init and ephemeral containers included).
package k8spodsecurity

containers contains c if {
	some c in input.review.object.spec.containers
}

containers contains c if {
	some c in input.review.object.spec.initContainers
}

containers contains c if {
	some c in input.review.object.spec.ephemeralContainers
}

violation contains {"msg": msg, "details": {"container": c.name}} if {
	some c in containers
	c.securityContext.privileged
	msg := sprintf("Privileged container is not allowed: %v, securityContext: %v", [c.name, c.securityContext])
}

violation contains {"msg": msg} if {
	some field in ["hostPID", "hostIPC", "hostNetwork"]
	input.review.object.spec[field]
	msg := sprintf("Sharing the host namespace is not allowed: %v", [field])
}

violation contains {"msg": msg} if {
	some volume in input.review.object.spec.volumes
	volume.hostPath
	msg := sprintf("HostPath volume %v is not allowed", [volume.name])
}

violation contains {"msg": msg} if {
	count(object.get(input.parameters, "repos", [])) > 0
	some c in containers
	not allowed_image(c.image)
	msg := sprintf("container <%v> has an invalid image repo <%v>, allowed repos are %v", [c.name, c.image, input.parameters.repos])
}

allowed_image(image) if {
	some repo in input.parameters.repos
	startswith(image, repo)
}

violation contains {"msg": msg} if {
	some c in containers
	some resource in ["cpu", "memory"]
	not c.resources.limits[resource]
	msg := sprintf("container <%v> has no %v limit", [c.name, resource])
}
