//! What Rego policies are given and how their results become admission responses, per
//! execution mode.

use serde::Serialize;
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

/// A `gatekeeper` policy answers a list of violations (`{"msg": ..., "details": ...}`): none
/// admits the request, any rejects it with their messages joined by ", ". A result that is not
/// such a list is an error (upstream silently admits it).
pub(crate) fn gatekeeper_response(
    uid: &str,
    result: &Value,
) -> Result<AdmissionResponse, EvaluationError> {
    let violations = match first_result(result) {
        None => &[][..],
        Some(Value::Array(violations)) => violations.as_slice(),
        Some(other) => {
            return Err(EvaluationError::InvalidAnswer {
                expected: "list of Gatekeeper violations",
                reason: format!("the policy's result is {}", quote(other)),
            });
        }
    };
    if violations.is_empty() {
        return Ok(AdmissionResponse {
            uid: uid.to_string(),
            allowed: true,
            ..Default::default()
        });
    }
    let messages: Vec<String> = violations
        .iter()
        .map(|violation| match violation.get("msg") {
            Some(Value::String(message)) => message.clone(),
            _ => quote(violation),
        })
        .collect();
    Ok(AdmissionResponse::rejection(uid, messages.join(", "), None))
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
        let allowed = gatekeeper_response("u", &json!([{"result": []}])).expect("valid");
        assert!(allowed.allowed);
        let undefined = gatekeeper_response("u", &json!([])).expect("valid");
        assert!(undefined.allowed);
        let rejected = gatekeeper_response(
            "u",
            &json!([{"result": [{"msg": "a is bad"}, {"msg": "b is bad", "details": {}}, {"details": 1}]}]),
        )
        .expect("valid");
        assert!(!rejected.allowed);
        let status = rejected.status.expect("status");
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

    #[test]
    fn gatekeeper_result_that_is_not_a_list_is_an_error() {
        let err =
            gatekeeper_response("u", &json!([{"result": {"msg": "x"}}])).expect_err("invalid");
        assert!(
            matches!(err, EvaluationError::InvalidAnswer { .. }),
            "{err}"
        );
    }
}
