//! What policies answer (ValidationResponse, SettingsValidationResponse) and how an answer
//! becomes the `response` of an AdmissionReview.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A policy's verdict on one request. The Rust SDK writes absent fields as `null`, the Go SDK
/// omits them; both read the same.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ValidationResponse {
    pub accepted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutated_object: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
}

/// A policy's verdict on its settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SettingsValidationResponse {
    pub valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One entry of `status.details.causes`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusCause {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, rename = "reason", skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusDetails {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
}

/// The `status` of an AdmissionResponse.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct AdmissionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
}

/// The `response` of an `admission.k8s.io/v1` AdmissionReview.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    pub uid: String,
    pub allowed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
    /// Base64 of an RFC 6902 JSON Patch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AdmissionStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
}

/// Message returned when a policy mutates a request that has no object (a DELETE).
pub const MUTATION_WITHOUT_OBJECT: &str = "Incoming object is null, which happens only with DELETE operations, but a policy is attempting to mutate it. This is not allowed";

impl AdmissionResponse {
    /// A rejection for a request the policy could not evaluate (code 500).
    pub fn internal_error(uid: &str, message: impl std::fmt::Display) -> Self {
        AdmissionResponse {
            uid: uid.to_string(),
            allowed: false,
            status: Some(AdmissionStatus {
                message: Some(format!("internal server error: {message}")),
                code: Some(500),
                details: None,
            }),
            ..Default::default()
        }
    }

    /// A rejection with a message and code, without patch.
    pub fn rejection(uid: &str, message: impl Into<String>, code: Option<u16>) -> Self {
        AdmissionResponse {
            uid: uid.to_string(),
            allowed: false,
            status: Some(AdmissionStatus {
                message: Some(message.into()),
                code,
                details: None,
            }),
            ..Default::default()
        }
    }

    /// Turns a policy's answer into an admission response. `original` is what the policy was
    /// asked about: the request's `object` for Kubernetes policies, the whole document for raw
    /// policies; a mutation becomes a JSON Patch against it.
    pub fn from_validation(uid: &str, original: &Value, answer: ValidationResponse) -> Self {
        let mut response = AdmissionResponse {
            uid: uid.to_string(),
            allowed: answer.accepted,
            audit_annotations: answer.audit_annotations,
            warnings: answer.warnings,
            ..Default::default()
        };
        if answer.message.is_some() || answer.code.is_some() {
            response.status = Some(AdmissionStatus {
                message: answer.message,
                code: answer.code,
                details: None,
            });
        }
        if let Some(mutated) = answer.mutated_object {
            if original.is_null() {
                return AdmissionResponse::rejection(uid, MUTATION_WITHOUT_OBJECT, Some(400));
            }
            let patch = json_patch::diff(original, &mutated);
            if !patch.0.is_empty() {
                // A Patch is a list of plain JSON values, which always serialises.
                let bytes = serde_json::to_vec(&patch).unwrap_or_default();
                response.patch_type = Some("JSONPatch".to_string());
                response.patch = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
            }
        }
        response
    }

    /// The patch, decoded (for tests and logs).
    pub fn decoded_patch(&self) -> Option<Value> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(self.patch.as_ref()?)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rust_and_go_sdk_answers_read_the_same() {
        let rust: ValidationResponse = serde_json::from_str(
            r#"{"accepted":false,"message":"no","code":null,"mutated_object":null,"audit_annotations":null,"warnings":null}"#,
        )
        .expect("rust sdk");
        let go: ValidationResponse =
            serde_json::from_str(r#"{"accepted":false,"message":"no"}"#).expect("go sdk");
        assert_eq!(rust, go);
    }

    #[test]
    fn rejection_keeps_message_and_code() {
        let answer = ValidationResponse {
            accepted: false,
            message: Some("label x is not allowed".into()),
            code: Some(403),
            warnings: Some(vec!["careful".into()]),
            ..Default::default()
        };
        let response = AdmissionResponse::from_validation("uid-1", &json!({}), answer);
        assert_eq!(
            serde_json::to_value(&response).expect("json"),
            json!({"uid": "uid-1", "allowed": false, "status": {"message": "label x is not allowed", "code": 403}, "warnings": ["careful"]})
        );
    }

    #[test]
    fn mutation_becomes_a_json_patch() {
        let original = json!({"metadata": {"name": "p"}, "spec": {"a": 1}});
        let mutated = json!({"metadata": {"name": "p", "labels": {"x": "y"}}, "spec": {"a": 1}});
        let answer = ValidationResponse {
            accepted: true,
            mutated_object: Some(mutated),
            ..Default::default()
        };
        let response = AdmissionResponse::from_validation("u", &original, answer);
        assert_eq!(response.patch_type.as_deref(), Some("JSONPatch"));
        assert_eq!(
            response.decoded_patch(),
            Some(json!([{"op": "add", "path": "/metadata/labels", "value": {"x": "y"}}]))
        );
        assert!(response.status.is_none());
    }

    #[test]
    fn numbers_of_a_mutation_keep_their_exact_value() {
        // Found by the json_patch fuzz target: without serde_json's `float_roundtrip`, this
        // number came back one unit in the last place off.
        let original = json!({"a": 8});
        let mutated: Value = serde_json::from_str(r#"{"a": 8.888888888888888e+46}"#).expect("json");
        assert_eq!(mutated["a"].as_f64(), Some(8.888888888888888e46));
        let answer = ValidationResponse {
            accepted: true,
            mutated_object: Some(mutated.clone()),
            ..Default::default()
        };
        let response = AdmissionResponse::from_validation("u", &original, answer);
        let patch: json_patch::Patch =
            serde_json::from_value(response.decoded_patch().expect("patch")).expect("a patch");
        let mut patched = original.clone();
        json_patch::patch(&mut patched, &patch).expect("applies");
        assert_eq!(patched, mutated);
    }

    #[test]
    fn unchanged_mutated_object_gives_no_patch() {
        let original = json!({"a": 1});
        let answer = ValidationResponse {
            accepted: true,
            mutated_object: Some(original.clone()),
            ..Default::default()
        };
        let response = AdmissionResponse::from_validation("u", &original, answer);
        assert_eq!(response.patch, None);
        assert_eq!(response.patch_type, None);
    }

    #[test]
    fn mutating_a_delete_is_refused() {
        let answer = ValidationResponse {
            accepted: true,
            mutated_object: Some(json!({"a": 1})),
            ..Default::default()
        };
        let response = AdmissionResponse::from_validation("u", &Value::Null, answer);
        assert!(!response.allowed);
        assert_eq!(
            response.status.and_then(|s| s.message).as_deref(),
            Some(MUTATION_WITHOUT_OBJECT)
        );
    }

    #[test]
    fn internal_errors_are_code_500() {
        let response = AdmissionResponse::internal_error("u", "boom");
        assert_eq!(
            serde_json::to_value(&response).expect("json"),
            json!({"uid": "u", "allowed": false, "status": {"message": "internal server error: boom", "code": 500}})
        );
    }
}
