//! What Rego policies are given and how their results become admission responses, per
//! execution mode.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::EvaluationError;
use crate::host::KindObjects;
use crate::response::AdmissionResponse;

/// Input of an `opa` policy: `input.request` is the AdmissionRequest (or the raw document).
#[derive(Serialize)]
pub(crate) struct OpaInput<'a> {
    pub(crate) request: &'a Value,
}

/// Input of a `gatekeeper` policy, as Gatekeeper builds it for a ConstraintTemplate.
#[derive(Serialize)]
pub(crate) struct GatekeeperInput<'a> {
    pub(crate) parameters: &'a Value,
    pub(crate) review: &'a Value,
}

/// The data document of a policy that has none: `{}`.
#[derive(Serialize)]
pub(crate) struct EmptyData {}

pub(crate) const EMPTY_DATA: EmptyData = EmptyData {};

/// `data.kubernetes` of an `opa` policy: `<plural>.<namespace>.<name>` for namespaced
/// objects, `<plural>.<name>` for cluster-scoped ones.
pub(crate) fn kubernetes_data(kinds: &[KindObjects]) -> Value {
    let mut data = Map::new();
    for kind in kinds {
        let by_plural = entry(&mut data, &kind.plural);
        for object in &kind.objects {
            let (namespace, name) = namespace_and_name(object);
            if kind.namespaced {
                entry(by_plural, &namespace).insert(name, object.clone());
            } else {
                by_plural.insert(name, object.clone());
            }
        }
    }
    Value::Object(data)
}

/// `data.inventory` of a `gatekeeper` policy, as Gatekeeper syncs it:
/// `cluster.<apiVersion>.<Kind>.<name>` and `namespace.<ns>.<apiVersion>.<Kind>.<name>`.
pub(crate) fn inventory_data(kinds: &[KindObjects]) -> Value {
    let mut inventory = Map::new();
    for kind in kinds {
        for object in &kind.objects {
            let (namespace, name) = namespace_and_name(object);
            let scope = if kind.namespaced {
                entry(entry(&mut inventory, "namespace"), &namespace)
            } else {
                entry(&mut inventory, "cluster")
            };
            entry(entry(scope, &kind.api_version), &kind.kind).insert(name, object.clone());
        }
    }
    Value::Object(inventory)
}

fn namespace_and_name(object: &Value) -> (String, String) {
    let text = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (text("/metadata/namespace"), text("/metadata/name"))
}

/// The object under `key`, created empty if missing (or replacing a non-object).
fn entry<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = map
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(inner) => inner,
        _ => unreachable!("made an object above"),
    }
}

/// The value of the first result, `[{"result": <value>}]`; `None` when undefined.
fn first_result(result: &Value) -> Option<&Value> {
    result.get(0).and_then(|first| first.get("result"))
}

/// Longest excerpt of a policy's answer quoted in an error.
const QUOTE_LIMIT: usize = 200;

fn quote(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(QUOTE_LIMIT) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text,
    }
}

/// An `opa` policy answers an AdmissionReview; its `response` is the verdict, with the uid
/// of the request whatever the policy wrote.
pub(crate) fn opa_response(
    uid: &str,
    result: &Value,
) -> Result<AdmissionResponse, EvaluationError> {
    let invalid = |reason: String| EvaluationError::InvalidAnswer {
        expected: "AdmissionReview with a response",
        reason,
    };
    let mut response = first_result(result)
        .and_then(|review| review.get("response"))
        .cloned()
        .ok_or_else(|| invalid(format!("the policy's result is {}", quote(result))))?;
    if let Value::Object(fields) = &mut response {
        fields.insert("uid".to_string(), Value::String(uid.to_string()));
    }
    serde_json::from_value(response).map_err(|e| invalid(e.to_string()))
}

/// One violation as upstream Kubewarden's Gatekeeper runtime reads it: anything serde reads
/// into a struct with an optional string `msg` (an object, other members ignored).
#[derive(Deserialize)]
struct UpstreamViolation {
    msg: Option<String>,
}

/// The verdict on a `gatekeeper` policy's result, read exactly as upstream Kubewarden reads it,
/// so that a cluster's admissions do not change when it moves to this project.
#[derive(Debug)]
pub(crate) struct GatekeeperVerdict {
    pub(crate) response: AdmissionResponse,
    /// Set when the result is not a list of violations and was therefore taken, as upstream
    /// takes it, as "no violations": what the result is, for a warning and the policy's
    /// status. Such a policy admits every request.
    pub(crate) not_understood: Option<String>,
}

/// A `gatekeeper` policy answers a list of violations (`{"msg": ..., "details": ...}`): none
/// admits the request, any rejects it with their messages joined by ", " (a violation without
/// `msg` is quoted whole, where upstream leaves it out of the message). An undefined result
/// admits. Any other result (an object, such as the package's document when the entrypoint is
/// the package instead of its `violation` rule; a violation that is not an object; a `msg`
/// that is not a string) also admits, because upstream's runtime reads it as an empty list;
/// the verdict then says what it was.
pub(crate) fn gatekeeper_response(uid: &str, result: &Value) -> GatekeeperVerdict {
    let admitted = || AdmissionResponse {
        uid: uid.to_string(),
        allowed: true,
        ..Default::default()
    };
    let Some(value) = first_result(result) else {
        return GatekeeperVerdict {
            response: admitted(),
            not_understood: None,
        };
    };
    let violations = match Vec::<UpstreamViolation>::deserialize(value) {
        Ok(violations) => violations,
        Err(err) => {
            return GatekeeperVerdict {
                response: admitted(),
                not_understood: Some(describe_unread_result(value, &err)),
            };
        }
    };
    if violations.is_empty() {
        return GatekeeperVerdict {
            response: admitted(),
            not_understood: None,
        };
    }
    // Reading succeeded, so the value is a list with one item per violation.
    let raw = value.as_array().map(Vec::as_slice).unwrap_or_default();
    let messages: Vec<String> = violations
        .into_iter()
        .zip(raw)
        .map(|(violation, raw)| violation.msg.unwrap_or_else(|| quote(raw)))
        .collect();
    GatekeeperVerdict {
        response: AdmissionResponse::rejection(uid, messages.join(", "), None),
        not_understood: None,
    }
}

/// What a Gatekeeper result that is not a list of violations is, in words a policy author can
/// act on.
fn describe_unread_result(value: &Value, err: &serde_json::Error) -> String {
    match value {
        Value::Object(members) => {
            let names: Vec<&str> = members.keys().map(String::as_str).take(8).collect();
            let hint = if members.get("violation").is_some_and(Value::is_array) {
                ": the module's entrypoint is probably the Rego package instead of its \
                 `violation` rule (build it with `opa build -t wasm -e <package>/violation`)"
            } else {
                ""
            };
            format!(
                "an object with the members [{}] instead of a list of violations{hint}",
                names.join(", ")
            )
        }
        Value::Array(_) => format!("a list that is not one of violations ({err})"),
        other => format!("{} instead of a list of violations", quote(other)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn opa_response_takes_the_review_response_with_the_request_uid() {
        let result = json!([{"result": {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": "", "allowed": false, "status": {"message": "no"}}}}]);
        let response = opa_response("u-1", &result).expect("valid");
        assert_eq!(
            serde_json::to_value(response).expect("json"),
            json!({"uid": "u-1", "allowed": false, "status": {"message": "no"}})
        );
    }

    #[test]
    fn opa_result_without_a_response_is_an_error() {
        for result in [
            json!([]),
            json!([{"result": {"kind": "AdmissionReview"}}]),
            json!([{"result": {"response": {"allowed": "yes"}}}]),
        ] {
            let err = opa_response("u", &result).expect_err("invalid");
            assert!(
                matches!(err, EvaluationError::InvalidAnswer { .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn gatekeeper_violations_become_one_rejection() {
        let allowed = gatekeeper_response("u", &json!([{"result": []}]));
        assert!(allowed.response.allowed);
        assert!(allowed.not_understood.is_none());
        let undefined = gatekeeper_response("u", &json!([]));
        assert!(undefined.response.allowed);
        assert!(undefined.not_understood.is_none());
        let rejected = gatekeeper_response(
            "u",
            &json!([{"result": [{"msg": "a is bad"}, {"msg": "b is bad", "details": {}}, {"details": 1}]}]),
        );
        assert!(rejected.not_understood.is_none());
        assert!(!rejected.response.allowed);
        let status = rejected.response.status.expect("status");
        assert_eq!(
            status.message.as_deref(),
            Some(r#"a is bad, b is bad, {"details":1}"#)
        );
        assert_eq!(status.code, None);
    }

    #[test]
    fn context_data_follows_opa_and_gatekeeper_layouts() {
        let kinds = vec![
            KindObjects {
                api_version: "v1".into(),
                kind: "Namespace".into(),
                plural: "namespaces".into(),
                namespaced: false,
                objects: vec![json!({"metadata": {"name": "a"}})],
            },
            KindObjects {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                plural: "deployments".into(),
                namespaced: true,
                objects: vec![json!({"metadata": {"name": "d", "namespace": "a"}})],
            },
        ];
        assert_eq!(
            kubernetes_data(&kinds),
            json!({"namespaces": {"a": {"metadata": {"name": "a"}}},
                   "deployments": {"a": {"d": {"metadata": {"name": "d", "namespace": "a"}}}}})
        );
        assert_eq!(
            inventory_data(&kinds),
            json!({"cluster": {"v1": {"Namespace": {"a": {"metadata": {"name": "a"}}}}},
                   "namespace": {"a": {"apps/v1": {"Deployment": {"d": {"metadata": {"name": "d", "namespace": "a"}}}}}}})
        );
    }

    /// Upstream's runtime reads any result it cannot take as a list of violations as "no
    /// violations": the same verdicts here, each with what the result was.
    #[test]
    fn gatekeeper_results_upstream_cannot_read_admit_and_say_what_they_were() {
        let cases = [
            (
                json!({"violation": [{"msg": "label a is not allowed"}]}),
                "an object with the members [violation] instead of a list of violations: \
                 the module's entrypoint is probably the Rego package",
            ),
            (
                json!({"msg": "x"}),
                "an object with the members [msg] instead of a list of violations",
            ),
            (json!("no"), r#""no" instead of a list of violations"#),
            (json!(true), "true instead of a list of violations"),
            (json!(["bad"]), "a list that is not one of violations"),
            (json!([{"msg": 5}]), "a list that is not one of violations"),
        ];
        for (value, expected) in cases {
            let verdict = gatekeeper_response("u", &json!([{ "result": value.clone() }]));
            assert!(verdict.response.allowed, "{value} admits, as upstream");
            let shape = verdict.not_understood.expect("says what it was");
            assert!(shape.starts_with(expected), "{value}: {shape}");
        }
    }

    /// Shapes upstream's serde reading takes as violations although they are not objects.
    #[test]
    fn gatekeeper_violations_read_as_upstream_reads_them() {
        let verdict = gatekeeper_response("u", &json!([{"result": [["a is bad"], [null]]}]));
        assert!(verdict.not_understood.is_none());
        assert!(!verdict.response.allowed);
        assert_eq!(
            verdict.response.status.and_then(|s| s.message).as_deref(),
            Some("a is bad, [null]")
        );
    }
}
