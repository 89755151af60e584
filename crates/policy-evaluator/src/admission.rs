//! The webhook's side of an evaluation: decoding the `request` of a webhook body, and shaping
//! a policy's answer by how the policy is configured (monitor mode, mutation permission, custom
//! message) before the API server sees it. The policy-server does both around every
//! evaluation; they live next to [`crate::response`] so they can be tested and fuzzed without
//! a server.

use std::fmt;
use std::sync::OnceLock;

use api_types::crd::PolicyMode;
use bytes::Bytes;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
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

/// The `request` of a webhook body: the JSON text it arrived as, which waPC and WASI policies
/// are given inside their payload (a slice of the body, not a copy), and the few members the
/// host reads for every request (uid, namespace, kind, operation: metric labels and answers).
///
/// The whole request is parsed into a [`Value`] only when something needs it (Rego input, the
/// diff of a mutation, a raw document's patch), on the thread that asks: for a policy that
/// only validates, the request is never built as a tree. Building and freeing that tree was
/// the largest share of the webhook's own CPU time per request (see the README's benchmark).
#[derive(Debug)]
pub struct DecodedRequest {
    json: Bytes,
    summary: RequestSummary,
    value: OnceLock<Value>,
}

impl DecodedRequest {
    /// The request, parsed on first use.
    pub fn value(&self) -> &Value {
        self.value.get_or_init(|| {
            // The text was checked to be JSON, and no deeper than serde_json's limit, when the
            // body was decoded (see `Skipped`), so this parse does not fail.
            serde_json::from_slice(&self.json).unwrap_or(Value::Null)
        })
    }

    /// The request's JSON text.
    pub fn json(&self) -> &[u8] {
        &self.json
    }

    /// The request's `uid`, or `""`.
    pub fn uid(&self) -> &str {
        self.uid_member().unwrap_or_default()
    }

    /// The request's `uid`, if it is a string.
    pub(crate) fn uid_member(&self) -> Option<&str> {
        self.summary.uid.as_deref()
    }

    /// `namespace`, or `""`.
    pub fn namespace(&self) -> &str {
        &self.summary.namespace
    }

    /// `kind.kind`, or `""`.
    pub fn kind(&self) -> &str {
        &self.summary.kind
    }

    /// `operation`, or `""`.
    pub fn operation(&self) -> &str {
        &self.summary.operation
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
    let summary: RequestSummary =
        serde_json::from_str(raw.get()).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    if document == Document::AdmissionReview {
        if !summary.is_object {
            return Err("\"request\" must be an object".into());
        }
        if summary.uid.is_none() {
            return Err("the AdmissionReview request has no \"uid\"".into());
        }
    }
    Ok(DecodedRequest {
        json: body.slice_ref(raw.get().as_bytes()),
        summary,
        value: OnceLock::new(),
    })
}

/// What the host reads of every request, picked out in one pass over its text; everything
/// else is skipped without being built. Members that are repeated count as `Value` would count
/// them (the last one); members that are not strings read as `""`.
#[derive(Debug, Default)]
struct RequestSummary {
    is_object: bool,
    uid: Option<String>,
    namespace: String,
    kind: String,
    operation: String,
}

impl FromJson for RequestSummary {
    fn from_object<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut summary = RequestSummary {
            is_object: true,
            ..Default::default()
        };
        while let Some(key) = map.next_key::<Member>()? {
            match key {
                Member::Uid => {
                    summary.uid = map.next_value::<Text>()?.0;
                }
                Member::Namespace => {
                    summary.namespace = map.next_value::<Text>()?.0.unwrap_or_default();
                }
                Member::Operation => {
                    summary.operation = map.next_value::<Text>()?.0.unwrap_or_default();
                }
                Member::Kind => summary.kind = map.next_value::<KindMember>()?.0,
                Member::Request | Member::Other => {
                    map.next_value::<Skipped>()?;
                }
            }
        }
        Ok(summary)
    }
}

/// The member names the host looks for: `request` in a webhook body, the others in the
/// request. Compared without keeping the name (names may hold escapes, so they cannot always
/// be borrowed).
enum Member {
    Request,
    Uid,
    Namespace,
    Kind,
    Operation,
    Other,
}

impl<'de> serde::Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl Visitor<'_> for NameVisitor {
            type Value = Member;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<Member, E> {
                Ok(match name {
                    "request" => Member::Request,
                    "uid" => Member::Uid,
                    "namespace" => Member::Namespace,
                    "kind" => Member::Kind,
                    "operation" => Member::Operation,
                    _ => Member::Other,
                })
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

/// A string, or `None` for any other JSON value.
#[derive(Default)]
struct Text(Option<String>);

impl FromJson for Text {
    fn from_text(text: &str) -> Self {
        Text(Some(text.to_string()))
    }
}

/// The `kind` member of a request (a GroupVersionKind): its own `kind` string, or `""`.
#[derive(Default)]
struct KindMember(String);

impl FromJson for KindMember {
    fn from_object<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut kind = KindMember::default();
        while let Some(key) = map.next_key::<Member>()? {
            if let Member::Kind = key {
                kind.0 = map.next_value::<Text>()?.0.unwrap_or_default();
            } else {
                map.next_value::<Skipped>()?;
            }
        }
        Ok(kind)
    }
}

/// Any JSON value, skipped. Unlike `IgnoredAny` (which serde_json skips without a depth
/// limit) it goes through serde_json's recursion check, so a request nested deeper than a
/// `Value` may be is refused when decoded, as it was when requests were parsed whole, rather
/// than failing later when the tree is asked for.
#[derive(Default)]
struct Skipped;

impl FromJson for Skipped {}

/// A value read from any JSON value: objects and strings as the type says, every other value
/// skipped and read as the default.
trait FromJson: Default {
    fn from_object<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<IgnoredAny, Skipped>()?.is_some() {}
        Ok(Self::default())
    }

    fn from_text(_text: &str) -> Self {
        Self::default()
    }
}

/// Deserializes any [`FromJson`] type from whatever JSON value is there.
macro_rules! deserialize_from_json {
    ($($type:ty),*) => {$(
        impl<'de> serde::Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any(AnyJson(std::marker::PhantomData))
            }
        }
    )*};
}
deserialize_from_json!(RequestSummary, Text, KindMember, Skipped);

struct AnyJson<T>(std::marker::PhantomData<T>);

impl<'de, T: FromJson> Visitor<'de> for AnyJson<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_object(map)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        Ok(T::from_text(text))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        while seq.next_element::<Skipped>()?.is_some() {}
        Ok(T::default())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Ok(T::default())
    }
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
        while let Some(key) = map.next_key::<Member>()? {
            if let Member::Request = key {
                request = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Envelope { request })
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

    #[test]
    fn the_members_the_host_reads_are_picked_without_parsing_the_rest() {
        let body = Bytes::from_static(
            br#"{"request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "operation": "CREATE", "namespace": "team-a",
                "object": {"kind": "NotThisOne", "metadata": {"namespace": "nor-this"}}}}"#,
        );
        let decoded = decode_request(&body, Document::AdmissionReview).expect("valid");
        assert_eq!(
            (
                decoded.uid(),
                decoded.kind(),
                decoded.operation(),
                decoded.namespace()
            ),
            ("u-1", "Pod", "CREATE", "team-a")
        );
        assert!(decoded.value.get().is_none(), "not parsed until asked");
        assert_eq!(decoded.value()["object"]["kind"], "NotThisOne");

        // As `Value` reads them: escapes decoded, the last of repeated members, non-strings "".
        let body = Bytes::from_static(
            br#"{"request": {"uid": "first", "u\u0069d": "x\"y", "namespace": 3,
                "kind": "Pod", "operation": ["CREATE"], "kind": {"kind": {"kind": "deep"}}}}"#,
        );
        let decoded = decode_request(&body, Document::AdmissionReview).expect("valid");
        assert_eq!(decoded.uid(), "x\"y");
        assert_eq!(decoded.uid(), decoded.value()["uid"]);
        assert_eq!(
            (decoded.namespace(), decoded.operation(), decoded.kind()),
            ("", "", "")
        );

        // Nested deeper than serde_json's limit: refused when decoded, as a whole parse would.
        let deep = format!(
            r#"{{"request": {{"uid": "u", "object": {}{}}}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        for document in [Document::AdmissionReview, Document::Raw] {
            let err = decode_request(&Bytes::from(deep.clone()), document).expect_err("too deep");
            assert!(err.contains("recursion limit"), "{err}");
        }
        let deep_kind = format!(
            r#"{{"request": {{"uid": "u", "kind": {{"x": {}{}}}}}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let err = decode_request(&Bytes::from(deep_kind), Document::AdmissionReview)
            .expect_err("too deep");
        assert!(err.contains("recursion limit"), "{err}");

        // An empty uid is a uid; a raw document need not be an object.
        let empty = Bytes::from_static(br#"{"request": {"uid": ""}}"#);
        let decoded = decode_request(&empty, Document::AdmissionReview).expect("valid");
        assert_eq!(decoded.uid_member(), Some(""));
        for document in [
            &b"[1, {\"uid\": \"u\"}]"[..],
            b"\"text\"",
            b"null",
            b"1.5",
            b"true",
        ] {
            let body = Bytes::from([&b"{\"request\": "[..], document, b"}"].concat());
            let raw = decode_request(&body, Document::Raw).expect("any document");
            assert_eq!(raw.uid_member(), None);
            assert_eq!(
                raw.value(),
                &serde_json::from_slice::<Value>(document).expect("json")
            );
        }
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
