// A waPC policy written in standard Go, shaped like Kubewarden's pod-privileged policy and
// its TinyGo SDK siblings: it decodes the whole AdmissionReview into typed structs, rejects
// Pods with a privileged container (init and ephemeral containers included) unless the
// setting `skip_init_containers` or `skip_ephemeral_containers` excludes them, and logs the
// object it validates through the host's `tracing/log` capability on every request.
//
// Settings: `log_level` ("debug" by default, "info", "warning", "error", or "off" to skip the
// host call: the same policy without logging, for comparing the two).
package main

import (
	"encoding/json"
	"fmt"
)

type settings struct {
	LogLevel                string `json:"log_level"`
	SkipInitContainers      bool   `json:"skip_init_containers"`
	SkipEphemeralContainers bool   `json:"skip_ephemeral_containers"`
}

type securityContext struct {
	Privileged *bool `json:"privileged"`
}

type container struct {
	Name            string           `json:"name"`
	Image           string           `json:"image"`
	SecurityContext *securityContext `json:"securityContext"`
}

type objectMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

type pod struct {
	Kind     string     `json:"kind"`
	Metadata objectMeta `json:"metadata"`
	Spec     struct {
		Containers          []container `json:"containers"`
		InitContainers      []container `json:"initContainers"`
		EphemeralContainers []container `json:"ephemeralContainers"`
	} `json:"spec"`
}

type validationRequest struct {
	Request struct {
		UID       string `json:"uid"`
		Operation string `json:"operation"`
		Namespace string `json:"namespace"`
		Kind      struct {
			Kind string `json:"kind"`
		} `json:"kind"`
		Object pod `json:"object"`
	} `json:"request"`
	Settings settings `json:"settings"`
}

type validationResponse struct {
	Accepted bool   `json:"accepted"`
	Message  string `json:"message,omitempty"`
	Code     int    `json:"code,omitempty"`
}

type settingsResponse struct {
	Valid   bool   `json:"valid"`
	Message string `json:"message,omitempty"`
}

type logEntry struct {
	Level     string `json:"level"`
	Message   string `json:"message"`
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Operation string `json:"operation"`
	UID       string `json:"uid"`
}

func validLogLevel(level string) bool {
	switch level {
	case "", "debug", "info", "warning", "error", "off":
		return true
	}
	return false
}

func validateSettings(payload []byte) ([]byte, error) {
	var s settings
	if err := json.Unmarshal(payload, &s); err != nil {
		return json.Marshal(settingsResponse{Valid: false, Message: fmt.Sprintf("cannot decode the settings: %v", err)})
	}
	if !validLogLevel(s.LogLevel) {
		return json.Marshal(settingsResponse{Valid: false, Message: fmt.Sprintf("log_level %q is not one of debug, info, warning, error, off", s.LogLevel)})
	}
	return json.Marshal(settingsResponse{Valid: true})
}

func privileged(c container) bool {
	return c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged
}

func validate(payload []byte) ([]byte, error) {
	var request validationRequest
	if err := json.Unmarshal(payload, &request); err != nil {
		return json.Marshal(validationResponse{Accepted: false, Message: fmt.Sprintf("cannot decode the request: %v", err), Code: 400})
	}
	level := request.Settings.LogLevel
	if level == "" {
		level = "debug"
	}
	object := request.Request.Object
	if level != "off" {
		entry, err := json.Marshal(logEntry{
			Level:     level,
			Message:   "validating pod object",
			Name:      object.Metadata.Name,
			Namespace: request.Request.Namespace,
			Operation: request.Request.Operation,
			UID:       request.Request.UID,
		})
		if err == nil {
			logThroughHost(entry)
		}
	}
	if request.Request.Kind.Kind != "Pod" {
		return json.Marshal(validationResponse{Accepted: true})
	}
	checked := object.Spec.Containers
	if !request.Settings.SkipInitContainers {
		checked = append(checked, object.Spec.InitContainers...)
	}
	if !request.Settings.SkipEphemeralContainers {
		checked = append(checked, object.Spec.EphemeralContainers...)
	}
	for _, c := range checked {
		if privileged(c) {
			return json.Marshal(validationResponse{
				Accepted: false,
				Message:  fmt.Sprintf("Privileged container is not allowed: %s", c.Name),
			})
		}
	}
	return json.Marshal(validationResponse{Accepted: true})
}

func init() {
	handle = func(operation string, payload []byte) ([]byte, error) {
		switch operation {
		case "protocol_version":
			return []byte(`"v1"`), nil
		case "validate":
			return validate(payload)
		case "validate_settings":
			return validateSettings(payload)
		}
		return nil, fmt.Errorf("No handler registered for function %s", operation)
	}
}

// A reactor's main is never run; the Go toolchain still requires one.
func main() {}
