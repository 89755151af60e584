//! The webhook's side of an evaluation: decoding the `request` of a webhook body, and shaping
//! a policy's answer by how the policy is configured (monitor mode, mutation permission, custom
//! message) before the API server sees it. The policy-server does both around every
//! evaluation; they live next to [`crate::response`] so they can be tested and fuzzed without
//! a server.

use std::fmt;

use api_types::crd::PolicyMode;
use bytes::Bytes;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::response::{AdmissionResponse, AdmissionStatus, StatusCause, StatusDetails};

/// What a webhook body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    /// An AdmissionReview (`/validate`, `/audit`).
    AdmissionReview,
    /// `{"request": <any JSON>}` (`/validate_raw`).
    Raw,
}

/// The `request` of a webhook body, twice: parsed, for the host (labels, uid, Rego input),
/// and as the JSON text it arrived as, which waPC and WASI policies are given inside their
/// payload. Keeping the text spares serializing the request again for every evaluation; it is
/// a slice of the body, not a copy.
#[derive(Debug, Clone)]
pub struct DecodedRequest {
    value: Value,
    json: Bytes,
}

impl DecodedRequest {
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The request's JSON text.
    pub fn json(&self) -> &[u8] {
        &self.json
    }

    /// The request's `uid`, or `""`.
    pub fn uid(&self) -> &str {
        self.text(&["uid"])
    }

    /// The string at a path of member names into the request (`["kind", "kind"]`), or `""`.
    pub fn text(&self, path: &[&str]) -> &str {
        path.iter()
            .try_fold(&self.value, |value, name| value.get(name))
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// The `request` of a webhook body, checked enough that nothing later can fail on its shape:
/// for an AdmissionReview an object with a string `uid`. The error says what is wrong.
pub fn decode_request(body: &Bytes, document: Document) -> Result<DecodedRequest, String> {
    let no_request = || match document {
        Document::Raw => "the body must be {\"request\": <document>}".to_string(),
        Document::AdmissionReview => {
            "the body is not an AdmissionReview: it has no \"request\"".to_string()
        }
    };
    // The body is read once: the `request` member is borrowed as raw text, the rest skipped.
    let envelope: Envelope<'_> = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            no_request()
        } else {
            format!("the body is not valid JSON: {e}")
        }
    })?;
    let raw = envelope.request.ok_or_else(no_request)?;
    let value: Value =
        serde_json::from_str(raw.get()).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    if document == Document::AdmissionReview {
        if !value.is_object() {
            return Err("\"request\" must be an object".into());
        }
        if !value.get("uid").is_some_and(Value::is_string) {
            return Err("the AdmissionReview request has no \"uid\"".into());
        }
    }
    Ok(DecodedRequest {
        value,
        json: body.slice_ref(raw.get().as_bytes()),
    })
}

/// A webhook body as far as the policy-server reads it: the raw `request` member of a JSON
/// object (the last one, if repeated, as `serde_json::Value` would keep it).
struct Envelope<'a> {
    request: Option<&'a RawValue>,
}

impl<'de> serde::Deserialize<'de> for Envelope<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EnvelopeVisitor)
    }
}

struct EnvelopeVisitor;

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = Envelope<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut request = None;
        while let Some(key) = map.next_key::<MemberName>()? {
            if key.is_request {
                request = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Envelope { request })
    }
}

/// A member name, compared with `request` without keeping it (names may hold escapes, so they
/// cannot always be borrowed).
struct MemberName {
    is_request: bool,
}

impl<'de> serde::Deserialize<'de> for MemberName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl Visitor<'_> for NameVisitor {
            type Value = MemberName;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<MemberName, E> {
                Ok(MemberName {
                    is_request: name == "request",
                })
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
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
        let decode = |body: &'static [u8], document| decode_request(&Bytes::from(body), document);
        let review = br#"{"kind": "AdmissionReview", "request": {"uid": "u", "object": {}}}"#;
        let decoded = decode(review, Document::AdmissionReview).expect("valid");
        assert_eq!(decoded.uid(), "u");
        assert_eq!(decoded.json(), br#"{"uid": "u", "object": {}}"#);
        for (body, expected) in [
            (&b"{"[..], "not valid JSON"),
            (b"{\"request\": {\"uid\": \"u\"}} x", "not valid JSON"),
            (b"{\"request\": {\"uid\": \"u\"", "not valid JSON"),
            (b"{}", "has no \"request\""),
            (b"[{\"uid\": \"u\"}]", "has no \"request\""),
            (br#"{"request": null}"#, "must be an object"),
            (br#"{"request": 3}"#, "must be an object"),
            (br#"{"request": {"uid": 3}}"#, "has no \"uid\""),
        ] {
            let err = decode(body, Document::AdmissionReview).expect_err("refused");
            assert!(err.contains(expected), "{err}");
        }
        let raw = decode(br#"{"request": [1], "request": [2, 3]}"#, Document::Raw).expect("raw");
        assert_eq!(
            raw.value(),
            &serde_json::json!([2, 3]),
            "the last one, as Value"
        );
        assert_eq!(raw.json(), b"[2, 3]");
        let escaped = decode(br#"{"requ\u0065st": {"a": 1}}"#, Document::Raw).expect("escaped");
        assert_eq!(escaped.value()["a"], 1);
        let err = decode(b"[]", Document::Raw).expect_err("refused");
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
