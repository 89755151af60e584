//! Resolves the host name in the `host` setting through the host's `net/v1/dns_lookup_host`
//! capability: accepts with a warning listing the addresses, rejects when the name does not
//! resolve.

#[allow(dead_code)]
#[path = "../../common/wapc.rs"]
mod wapc;

use serde_json::Value;

fn host(settings: &Value) -> Result<String, String> {
    match settings.get("host") {
        Some(Value::String(host)) if !host.is_empty() => Ok(host.clone()),
        _ => Err("host must be a non-empty string".to_string()),
    }
}

fn handle(op: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
    if let Some(answer) = wapc::common_operation(op) {
        return answer;
    }
    let payload = wapc::parse(payload)?;
    if op == "validate_settings" {
        return Ok(match host(&payload) {
            Ok(_) => wapc::settings_valid(),
            Err(message) => wapc::settings_invalid(&message),
        });
    }
    let host = host(&payload["settings"])?;
    let query = Value::String(host.clone()).to_string();
    match wapc::host_call("net", "v1/dns_lookup_host", query.as_bytes()) {
        Ok(answer) => {
            let answer = wapc::parse(&answer)?;
            let ips: Vec<String> = answer["ips"]
                .as_array()
                .map(|ips| ips.iter().filter_map(|ip| ip.as_str().map(String::from)).collect())
                .unwrap_or_default();
            Ok(wapc::accept_with_warnings(&[format!("{} resolves to {}", host, ips.join(","))]))
        }
        Err(error) => Ok(wapc::reject(&format!("cannot resolve {}: {}", host, error), 400)),
    }
}

#[no_mangle]
pub extern "C" fn __guest_call(op_len: i32, payload_len: i32) -> i32 {
    wapc::dispatch(op_len, payload_len, handle)
}
