//! Rejects objects carrying a label listed in the `denied_labels` setting.
//!
//! Settings: `{"denied_labels": ["name", ...]}`; anything else is refused by validate_settings.

#[allow(dead_code)]
#[path = "../../common/wapc.rs"]
mod wapc;

use serde_json::Value;

fn denied_labels(settings: &Value) -> Result<Vec<String>, String> {
    match settings.get("denied_labels") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(String::from).ok_or_else(|| "denied_labels must be a list of strings".to_string()))
            .collect(),
        Some(_) => Err("denied_labels must be a list of strings".to_string()),
    }
}

fn handle(op: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
    if let Some(answer) = wapc::common_operation(op) {
        return answer;
    }
    let payload = wapc::parse(payload)?;
    if op == "validate_settings" {
        return Ok(match denied_labels(&payload) {
            Ok(_) => wapc::settings_valid(),
            Err(message) => wapc::settings_invalid(&message),
        });
    }
    let denied = denied_labels(&payload["settings"])?;
    let labels = &payload["request"]["object"]["metadata"]["labels"];
    for label in denied {
        if labels.get(&label).is_some() {
            wapc::log(&format!("rejecting: label {} is denied", label));
            return Ok(wapc::reject(&format!("label {} is not allowed", label), 403));
        }
    }
    Ok(wapc::accept())
}

#[no_mangle]
pub extern "C" fn __guest_call(op_len: i32, payload_len: i32) -> i32 {
    wapc::dispatch(op_len, payload_len, handle)
}
