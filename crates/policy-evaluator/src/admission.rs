//! The webhook's side of an evaluation: decoding the `request` of a webhook body, and shaping
//! a policy's answer by how the policy is configured (monitor mode, mutation permission, custom
//! message) before the API server sees it. The policy-server does both around every
//! evaluation; they live next to [`crate::response`] so they can be tested and fuzzed without
//! a server.

use api_types::crd::PolicyMode;
use serde_json::Value;

use crate::response::{AdmissionResponse, AdmissionStatus, StatusCause, StatusDetails};

/// What a webhook body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    /// An AdmissionReview (`/validate`, `/audit`).
    AdmissionReview,
    /// `{"request": <any JSON>}` (`/validate_raw`).
    Raw,
}

/// The `request` of a webhook body, checked enough that nothing later can fail on its shape:
/// for an AdmissionReview an object with a string `uid`. The error says what is wrong.
pub fn decode_request(body: &[u8], document: Document) -> Result<Value, String> {
    let mut parsed: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    // Taken out of the document, not cloned: it can be megabytes.
    let Some(request) = parsed.get_mut("request").map(Value::take) else {
        return Err(match document {
            Document::Raw => "the body must be {\"request\": <document>}".into(),
            Document::AdmissionReview => {
                "the body is not an AdmissionReview: it has no \"request\"".into()
            }
        });
    };
    if document == Document::AdmissionReview {
        if !request.is_object() {
            return Err("\"request\" must be an object".into());
        }
        if !request.get("uid").is_some_and(Value::is_string) {
            return Err("the AdmissionReview request has no \"uid\"".into());
        }
    }
    Ok(request)
}

/// Applies the policy's configuration to its raw answer.
pub fn shape(
    policy_id: &str,
    mode: PolicyMode,
    allowed_to_mutate: bool,
    custom_message: Option<&str>,
    mut response: AdmissionResponse,
) -> AdmissionResponse {
    if mode == PolicyMode::Monitor {
        tracing::info!(
            policy = policy_id,
            uid = %response.uid,
            allowed = response.allowed,
            mutated = response.patch.is_some(),
            message = response.status.as_ref().and_then(|s| s.message.as_deref()).unwrap_or_default(),
            "policy in monitor mode: decision logged, request accepted"
        );
        response.allowed = true;
        response.patch = None;
        response.patch_type = None;
        response.status = None;
        return response;
    }
    if response.patch.is_some() && !allowed_to_mutate {
        response = AdmissionResponse::rejection(
            &response.uid,
            format!(
                "Request rejected by policy {policy_id}. The policy attempted to mutate the request, but it is currently configured to not allow mutations."
            ),
            None,
        );
    }
    if !response.allowed
        && let Some(message) = custom_message
    {
        let status = response.status.get_or_insert_with(AdmissionStatus::default);
        let original = status.message.replace(message.to_string());
        if let Some(original) = original {
            status
                .details
                .get_or_insert_with(StatusDetails::default)
                .causes
                .push(StatusCause {
                    message: Some(original),
                    ..Default::default()
                });
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_decoded_or_refused_with_a_reason() {
        let review = br#"{"request": {"uid": "u", "object": {}}}"#;
        assert_eq!(
            decode_request(review, Document::AdmissionReview).expect("valid")["uid"],
            "u"
        );
        for (body, expected) in [
            (&b"{"[..], "not valid JSON"),
            (b"{}", "has no \"request\""),
            (br#"{"request": 3}"#, "must be an object"),
            (br#"{"request": {"uid": 3}}"#, "has no \"uid\""),
        ] {
            let err = decode_request(body, Document::AdmissionReview).expect_err("refused");
            assert!(err.contains(expected), "{err}");
        }
        assert_eq!(
            decode_request(br#"{"request": [1]}"#, Document::Raw).expect("raw"),
            serde_json::json!([1])
        );
        let err = decode_request(b"[]", Document::Raw).expect_err("refused");
        assert!(err.contains("must be {\"request\""), "{err}");
    }

    fn patched() -> AdmissionResponse {
        AdmissionResponse {
            uid: "u".into(),
            allowed: true,
            patch_type: Some("JSONPatch".into()),
            patch: Some("W10=".into()),
            ..Default::default()
        }
    }

    #[test]
    fn monitor_accepts_and_drops_patch_and_status() {
        let rejected = AdmissionResponse::rejection("u", "no", Some(403));
        let shaped = shape("p", PolicyMode::Monitor, false, None, rejected);
        assert!(shaped.allowed);
        assert_eq!(shaped.status, None);
        let shaped = shape("p", PolicyMode::Monitor, true, None, patched());
        assert_eq!((shaped.patch, shaped.patch_type), (None, None));
    }

    #[test]
    fn mutation_needs_permission() {
        let shaped = shape("clusterwide-x", PolicyMode::Protect, false, None, patched());
        assert!(!shaped.allowed);
        assert_eq!(shaped.patch, None);
        assert!(shaped
            .status
            .and_then(|s| s.message)
            .is_some_and(|m| m.starts_with("Request rejected by policy clusterwide-x. The policy attempted to mutate the request")));
        let allowed = shape("p", PolicyMode::Protect, true, None, patched());
        assert!(allowed.allowed && allowed.patch.is_some());
    }

    #[test]
    fn custom_message_replaces_and_keeps_the_original() {
        let rejected = AdmissionResponse::rejection("u", "label x is not allowed", Some(403));
        let shaped = shape(
            "p",
            PolicyMode::Protect,
            false,
            Some("Ask the platform team"),
            rejected,
        );
        let status = shaped.status.expect("status");
        assert_eq!(status.message.as_deref(), Some("Ask the platform team"));
        assert_eq!(status.code, Some(403));
        assert_eq!(
            status.details.expect("details").causes[0]
                .message
                .as_deref(),
            Some("label x is not allowed")
        );
        // Accepted requests are untouched.
        let accepted = AdmissionResponse {
            uid: "u".into(),
            allowed: true,
            ..Default::default()
        };
        assert_eq!(
            shape("p", PolicyMode::Protect, false, Some("m"), accepted.clone()),
            accepted
        );
    }
}
