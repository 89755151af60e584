//! A context-aware policy: rejects a namespaced object whose Namespace lacks the label named
//! by the `required_namespace_label` setting. It reads the Namespace through the host's
//! `kubernetes/get_resource` capability, so the policy must be granted `v1/Namespace` in its
//! `contextAwareResources`.

#[allow(dead_code)]
#[path = "../../common/wapc.rs"]
mod wapc;

use serde_json::{json, Value};

fn required_label(settings: &Value) -> Result<String, String> {
    match settings.get("required_namespace_label") {
        Some(Value::String(label)) if !label.is_empty() => Ok(label.clone()),
        _ => Err("required_namespace_label must be a non-empty string".to_string()),
    }
}

fn handle(op: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
    if let Some(answer) = wapc::common_operation(op) {
        return answer;
    }
    let payload = wapc::parse(payload)?;
    if op == "validate_settings" {
        return Ok(match required_label(&payload) {
            Ok(_) => wapc::settings_valid(),
            Err(message) => wapc::settings_invalid(&message),
        });
    }
    let label = required_label(&payload["settings"])?;
    let namespace = match payload["request"]["namespace"].as_str() {
        Some(namespace) if !namespace.is_empty() => namespace.to_string(),
        // Cluster-scoped objects have no namespace to check.
        _ => return Ok(wapc::accept()),
    };
    let query = json!({
        "api_version": "v1",
        "kind": "Namespace",
        "name": namespace,
        "disable_cache": false,
    });
    let answer = wapc::host_call("kubernetes", "get_resource", query.to_string().as_bytes())
        .map_err(|e| format!("cannot read namespace {}: {}", namespace, e))?;
    let object = wapc::parse(&answer)?;
    if object["metadata"]["labels"].get(&label).is_some() {
        Ok(wapc::accept())
    } else {
        Ok(wapc::reject(
            &format!("namespace {} lacks the label {}", namespace, label),
            403,
        ))
    }
}

#[no_mangle]
pub extern "C" fn __guest_call(op_len: i32, payload_len: i32) -> i32 {
    wapc::dispatch(op_len, payload_len, handle)
}
