// A WASI-mode policy (executionMode "wasi"): the host runs it as a command with argv
// `policy.wasm validate` or `policy.wasm validate-settings`, the request (or the settings) on
// stdin, and reads the answer from stdout.
//
// It rejects objects carrying a label listed in the `denied_labels` setting, like the Rust
// reject-by-label waPC policy, so both execution modes can be compared. With `resolve_host`
// set it asks the host to resolve that name (`net/v1/dns_lookup_host` through the WASI
// `host.call` import) and accepts with the addresses as a warning.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
)

type settings struct {
	DeniedLabels []string `json:"denied_labels"`
	ResolveHost  string   `json:"resolve_host"`
}

type validationRequest struct {
	Request struct {
		Object struct {
			Metadata struct {
				Labels map[string]string `json:"labels"`
			} `json:"metadata"`
		} `json:"object"`
	} `json:"request"`
	Settings settings `json:"settings"`
}

type validationResponse struct {
	Accepted bool     `json:"accepted"`
	Message  string   `json:"message,omitempty"`
	Code     int      `json:"code,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

type settingsResponse struct {
	Valid   bool   `json:"valid"`
	Message string `json:"message,omitempty"`
}

func answer(v any) {
	if err := json.NewEncoder(os.Stdout).Encode(v); err != nil {
		fmt.Fprintln(os.Stderr, "cannot write the answer:", err)
		os.Exit(1)
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: policy.wasm validate|validate-settings")
		os.Exit(2)
	}
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot read stdin:", err)
		os.Exit(1)
	}
	switch os.Args[1] {
	case "validate-settings":
		var s settings
		if err := json.Unmarshal(input, &s); err != nil {
			answer(settingsResponse{Valid: false, Message: "denied_labels must be a list of strings"})
			return
		}
		answer(settingsResponse{Valid: true})
	case "validate":
		var request validationRequest
		if err := json.Unmarshal(input, &request); err != nil {
			fmt.Fprintln(os.Stderr, "cannot parse the request:", err)
			os.Exit(1)
		}
		for _, label := range request.Settings.DeniedLabels {
			if _, found := request.Request.Object.Metadata.Labels[label]; found {
				answer(validationResponse{Accepted: false, Message: fmt.Sprintf("label %s is not allowed", label), Code: 403})
				return
			}
		}
		if host := request.Settings.ResolveHost; host != "" {
			query, _ := json.Marshal(host)
			reply, err := callHost("net", "v1/dns_lookup_host", query)
			if err != nil {
				answer(validationResponse{Accepted: false, Message: fmt.Sprintf("cannot resolve %s: %s", host, err), Code: 400})
				return
			}
			var resolved struct {
				Ips []string `json:"ips"`
			}
			if err := json.Unmarshal(reply, &resolved); err != nil {
				fmt.Fprintln(os.Stderr, "cannot parse the host's answer:", err)
				os.Exit(1)
			}
			answer(validationResponse{Accepted: true, Warnings: []string{fmt.Sprintf("%s resolves to %v", host, resolved.Ips)}})
			return
		}
		answer(validationResponse{Accepted: true})
	default:
		fmt.Fprintln(os.Stderr, "unknown operation", os.Args[1])
		os.Exit(2)
	}
}
