package main

// The guest side of waPC for the standard Go toolchain (GOOS=wasip1, -buildmode=c-shared):
// the module is a WASI reactor whose `_initialize` starts the Go runtime; the host then calls
// the exported `__guest_call` once per operation. TinyGo policies do the same through
// wapc-guest-tinygo; this one needs nothing but Go's own go:wasmimport and go:wasmexport.

import "unsafe"

// Buffers are passed as unsafe.Pointer, so Go keeps what they point to alive for the call
// (the host reads or writes them before it returns).

//go:wasmimport wapc __guest_request
func guestRequest(operation, payload unsafe.Pointer)

//go:wasmimport wapc __guest_response
func guestResponse(response unsafe.Pointer, length uint32)

//go:wasmimport wapc __guest_error
func guestError(message unsafe.Pointer, length uint32)

//go:wasmimport wapc __host_call
func hostCall(
	binding unsafe.Pointer, bindingLen uint32,
	namespace unsafe.Pointer, namespaceLen uint32,
	operation unsafe.Pointer, operationLen uint32,
	payload unsafe.Pointer, payloadLen uint32) uint32

func bytesPointer(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

func stringPointer(s string) unsafe.Pointer {
	return unsafe.Pointer(unsafe.StringData(s))
}

// handler answers one operation with its response, or an error for __guest_error.
type handler func(operation string, payload []byte) ([]byte, error)

var handle handler

//go:wasmexport __guest_call
func guestCall(operationLen, payloadLen int32) int32 {
	operation := make([]byte, operationLen)
	payload := make([]byte, payloadLen)
	guestRequest(bytesPointer(operation), bytesPointer(payload))
	response, err := handle(string(operation), payload)
	if err != nil {
		message := err.Error()
		guestError(stringPointer(message), uint32(len(message)))
		return 0
	}
	guestResponse(bytesPointer(response), uint32(len(response)))
	return 1
}

// logThroughHost sends one log entry to the host's `kubewarden/tracing/log` capability, as
// the Go and TinyGo SDKs' loggers do on every call they log. The host's answer is ignored:
// a log line that cannot be written must not change a verdict.
func logThroughHost(entry []byte) {
	const binding, namespace, operation = "kubewarden", "tracing", "log"
	hostCall(
		stringPointer(binding), uint32(len(binding)),
		stringPointer(namespace), uint32(len(namespace)),
		stringPointer(operation), uint32(len(operation)),
		bytesPointer(entry), uint32(len(entry)),
	)
}
