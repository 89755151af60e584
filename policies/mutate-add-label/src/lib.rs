//! Adds the label `kubewarden.io/mutated: "true"` to every object that lacks it.

#[allow(dead_code)]
#[path = "../../common/wapc.rs"]
mod wapc;

use serde_json::{json, Value};

fn handle(op: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
    if let Some(answer) = wapc::common_operation(op) {
        return answer;
    }
    let payload = wapc::parse(payload)?;
    if op == "validate_settings" {
        return Ok(wapc::settings_valid());
    }
    let mut object = payload["request"]["object"].clone();
    if object.is_null() {
        return Ok(wapc::accept());
    }
    if object["metadata"]["labels"]["kubewarden.io/mutated"] == "true" {
        return Ok(wapc::accept());
    }
    if !object["metadata"]["labels"].is_object() {
        object["metadata"]["labels"] = json!({});
    }
    object["metadata"]["labels"]["kubewarden.io/mutated"] = Value::from("true");
    Ok(json!({"accepted": true, "mutated_object": object}).to_string().into_bytes())
}

#[no_mangle]
pub extern "C" fn __guest_call(op_len: i32, payload_len: i32) -> i32 {
    wapc::dispatch(op_len, payload_len, handle)
}
