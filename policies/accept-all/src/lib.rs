//! Accepts every request; settings must be an object.

#[allow(dead_code)]
#[path = "../../common/wapc.rs"]
mod wapc;

fn handle(op: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
    if let Some(answer) = wapc::common_operation(op) {
        return answer;
    }
    let payload = wapc::parse(payload)?;
    match op {
        "validate" => Ok(wapc::accept()),
        _ if payload.is_object() => Ok(wapc::settings_valid()),
        _ => Ok(wapc::settings_invalid("settings must be an object")),
    }
}

#[no_mangle]
pub extern "C" fn __guest_call(op_len: i32, payload_len: i32) -> i32 {
    wapc::dispatch(op_len, payload_len, handle)
}
