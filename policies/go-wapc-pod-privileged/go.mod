module kubewarden-rs/policies/go-wapc-pod-privileged

go 1.24
