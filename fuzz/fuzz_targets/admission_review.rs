//! A webhook body and a policy's answer, as the policy-server handles them: the body decoded
//! (an AdmissionReview and a raw document), the answer (a guest's ValidationResponse JSON) made
//! an AdmissionResponse and shaped for each policy configuration. Input: flags byte, body, NUL,
//! answer. Never a panic; what reaches the API server always serialises, keeps the request's
//! uid, and respects the mode, the mutation permission and the custom message.
#![no_main]

use api_types::crd::PolicyMode;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use policy_evaluator::admission::{Document, decode_request, shape};
use policy_evaluator::response::{AdmissionResponse, ValidationResponse};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (body, answer) = match rest.iter().position(|&b| b == 0) {
        Some(split) => (&rest[..split], &rest[split + 1..]),
        None => (rest, &[][..]),
    };
    let body = Bytes::copy_from_slice(body);
    if let Ok(raw) = decode_request(&body, Document::Raw) {
        let reparsed: Value = serde_json::from_slice(raw.json()).expect("the text is JSON");
        assert_eq!(
            &reparsed,
            raw.value(),
            "the text a policy gets is the parsed request"
        );
        // The members read without parsing the request are the ones the parsed request has.
        fn text(member: Option<&Value>) -> &str {
            member.and_then(Value::as_str).unwrap_or_default()
        }
        assert_eq!(raw.uid(), text(reparsed.get("uid")));
        assert_eq!(raw.namespace(), text(reparsed.get("namespace")));
        assert_eq!(raw.operation(), text(reparsed.get("operation")));
        assert_eq!(
            raw.kind(),
            text(reparsed.get("kind").and_then(|kind| kind.get("kind")))
        );
    }
    let Ok(decoded) = decode_request(&body, Document::AdmissionReview) else {
        return;
    };
    let request = decoded.value();
    let uid = request["uid"]
        .as_str()
        .expect("decoded requests have a string uid");
    let Ok(answer) = serde_json::from_slice::<ValidationResponse>(answer) else {
        return;
    };
    let mode = if flags & 1 == 0 {
        PolicyMode::Protect
    } else {
        PolicyMode::Monitor
    };
    let allowed_to_mutate = flags & 2 != 0;
    let custom_message = (flags & 4 != 0).then_some("custom message");
    let object = request.get("object").cloned().unwrap_or(Value::Null);
    let response = AdmissionResponse::from_validation(uid, &object, answer);
    let shaped = shape("fuzz", mode, allowed_to_mutate, custom_message, response);

    assert_eq!(shaped.uid, uid);
    if mode == PolicyMode::Monitor {
        assert!(shaped.allowed && shaped.patch.is_none() && shaped.status.is_none());
    }
    if !allowed_to_mutate {
        assert!(
            shaped.patch.is_none(),
            "a patch from a policy that may not mutate"
        );
    }
    if let (Some(message), false) = (custom_message, shaped.allowed) {
        assert_eq!(
            shaped.status.as_ref().and_then(|s| s.message.as_deref()),
            Some(message)
        );
    }
    let text = serde_json::to_string(&shaped).expect("the response serialises");
    let back: AdmissionResponse = serde_json::from_str(&text).expect("and reads back");
    assert_eq!(back, shaped);
});
