//! What waPC guests and WASI commands have in common: stores with the host imports'
//! state, JSON payloads in (`{"request": .., "settings": ..}`) and JSON answers out.

use serde::de::DeserializeOwned;
use serde_json::Value;
use wasmtime::{Instance, InstancePre, Store};
use wasmtime_wasi::p1::WasiP1Ctx;

use super::host_imports::{HostState, WapcCall};
use super::{PolicyContext, Request, Target};
use crate::error::{EvaluationError, classify, limit_reached};
use crate::limits::{MemoryLimiter, deadline_ticks};
use crate::response::{AdmissionResponse, SettingsValidationResponse, ValidationResponse};

/// A store for one instance of `pre`, under the policy's limits.
pub(super) fn new_store(
    pre: &InstancePre<HostState>,
    policy: &PolicyContext,
    wasi: WasiP1Ctx,
) -> Store<HostState> {
    let state = HostState {
        wasi,
        limiter: MemoryLimiter::new(policy.limits.memory_bytes),
        call: WapcCall::default(),
        policy_id: policy.policy_id.clone(),
        granted: policy.granted.clone(),
        host: policy.host.clone(),
        stdin: None,
    };
    let mut store = Store::new(pre.module().engine(), state);
    store.limiter(|state| &mut state.limiter);
    store.set_epoch_deadline(policy.limits.timeout.map_or(u64::MAX, deadline_ticks));
    store
}

pub(super) fn instantiate(
    pre: &InstancePre<HostState>,
    policy: &PolicyContext,
    store: &mut Store<HostState>,
) -> Result<Instance, EvaluationError> {
    pre.instantiate(&mut *store).map_err(|err| {
        limit_reached(&err, store.data().limiter.exceeded, &policy.limits)
            .unwrap_or(EvaluationError::Instantiation(err))
    })
}

/// Names the cause of a failed call.
pub(super) fn classify_in(
    store: &Store<HostState>,
    err: wasmtime::Error,
    policy: &PolicyContext,
) -> EvaluationError {
    classify(err, store.data().limiter.exceeded, &policy.limits)
}

/// Runs `validate` through `call` (one guest call of an operation with a payload) and shapes
/// the answer.
pub(super) fn validate(
    policy: &PolicyContext,
    uid: &str,
    request: &Request<'_>,
    target: Target,
    call: impl FnOnce(&str, Vec<u8>) -> Result<Vec<u8>, EvaluationError>,
) -> Result<AdmissionResponse, EvaluationError> {
    let payload = match request {
        Request::Decoded(decoded) => validation_payload(policy, decoded.json()),
        Request::Parsed(value) => validation_payload(policy, value.to_string().as_bytes()),
    };
    let answer: ValidationResponse = parse(&call("validate", payload)?, "ValidationResponse")?;
    // Only a mutation needs the original, to diff it against the mutated one.
    let original = match (&answer.mutated_object, target) {
        (None, _) => &Value::Null,
        (Some(_), Target::Admission) => request.value().get("object").unwrap_or(&Value::Null),
        (Some(_), Target::Document) => request.value(),
    };
    Ok(AdmissionResponse::from_validation(uid, original, answer))
}

/// Runs `validate_settings` through `call`.
pub(super) fn validate_settings(
    policy: &PolicyContext,
    call: impl FnOnce(&str, Vec<u8>) -> Result<Vec<u8>, EvaluationError>,
) -> Result<SettingsValidationResponse, EvaluationError> {
    parse(
        &call("validate_settings", policy.settings_json.clone())?,
        "SettingsValidationResponse",
    )
}

/// A guest's answer read as `T`, which `expected` names in the error.
pub(super) fn parse<T: DeserializeOwned>(
    answer: &[u8],
    expected: &'static str,
) -> Result<T, EvaluationError> {
    serde_json::from_slice(answer).map_err(|e| EvaluationError::InvalidAnswer {
        expected,
        reason: e.to_string(),
    })
}

/// The `validate` payload, `{"request": .., "settings": ..}`, put together from JSON text
/// at hand in one allocation of the exact size.
fn validation_payload(policy: &PolicyContext, request_json: &[u8]) -> Vec<u8> {
    const REQUEST: &[u8] = br#"{"request":"#;
    const SETTINGS: &[u8] = br#","settings":"#;
    let settings = &policy.settings_json;
    let mut payload = Vec::with_capacity(
        REQUEST.len() + request_json.len() + SETTINGS.len() + settings.len() + 1,
    );
    payload.extend_from_slice(REQUEST);
    payload.extend_from_slice(request_json);
    payload.extend_from_slice(SETTINGS);
    payload.extend_from_slice(settings);
    payload.push(b'}');
    payload
}
