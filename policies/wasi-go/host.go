package main

import (
	"errors"
	"io"
	"os"
	"unsafe"
)

// The WASI host capability call of Kubewarden's Go SDK: the host answers 0 on success and 1
// on failure, and appends its response (or error text) to stdin.
//
//go:wasmimport host call
//go:noescape
func hostCall(
	bindingPtr, bindingLen,
	namespacePtr, namespaceLen,
	operationPtr, operationLen,
	payloadPtr, payloadLen uint32) uint32

func pointer(s string) uint32 {
	return uint32(uintptr(unsafe.Pointer(unsafe.StringData(s))))
}

// callHost asks the host for namespace/operation; the original stdin must be read already.
func callHost(namespace, operation string, payload []byte) ([]byte, error) {
	binding := "kubewarden"
	body := string(payload)
	failed := hostCall(
		pointer(binding), uint32(len(binding)),
		pointer(namespace), uint32(len(namespace)),
		pointer(operation), uint32(len(operation)),
		pointer(body), uint32(len(body)),
	) != 0
	answer, err := io.ReadAll(os.Stdin)
	if err != nil {
		return nil, err
	}
	if failed {
		return nil, errors.New(string(answer))
	}
	return answer, nil
}
