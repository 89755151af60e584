//! Forwards one host capability call, named by its settings, and reports the answer: accepts
//! with the host's response as a warning, rejects with the host's error. Tests drive every
//! capability of a real policy-server through it.
//!
//! Settings: `{"namespace": "kubernetes", "operation": "can_i", "payload": <JSON>}`.

#[allow(dead_code)]
#[path = "../../common/wapc.rs"]
mod wapc;

use serde_json::Value;

fn call(settings: &Value) -> Result<(String, String, Vec<u8>), String> {
    let text = |key: &str| match settings.get(key) {
        Some(Value::String(value)) if !value.is_empty() => Ok(value.clone()),
        _ => Err(format!("{} must be a non-empty string", key)),
    };
    let payload = settings.get("payload").cloned().unwrap_or(Value::Null);
    Ok((text("namespace")?, text("operation")?, payload.to_string().into_bytes()))
}

fn handle(op: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
    if let Some(answer) = wapc::common_operation(op) {
        return answer;
    }
    let payload = wapc::parse(payload)?;
    if op == "validate_settings" {
        return Ok(match call(&payload) {
            Ok(_) => wapc::settings_valid(),
            Err(message) => wapc::settings_invalid(&message),
        });
    }
    let (namespace, operation, query) = call(&payload["settings"])?;
    match wapc::host_call(&namespace, &operation, &query) {
        Ok(answer) => Ok(wapc::accept_with_warnings(&[String::from_utf8_lossy(&answer).into_owned()])),
        Err(error) => Ok(wapc::reject(&error, 400)),
    }
}

#[no_mangle]
pub extern "C" fn __guest_call(op_len: i32, payload_len: i32) -> i32 {
    wapc::dispatch(op_len, payload_len, handle)
}
