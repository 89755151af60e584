//! The guest side of waPC, written out so the test policies need no SDK: the host calls
//! `__guest_call`, the guest fetches the operation and payload with `__guest_request` and
//! answers with `__guest_response` or `__guest_error`.

#[link(wasm_import_module = "wapc")]
extern "C" {
    fn __guest_request(op_ptr: *mut u8, payload_ptr: *mut u8);
    fn __guest_response(ptr: *const u8, len: usize);
    fn __guest_error(ptr: *const u8, len: usize);
    fn __console_log(ptr: *const u8, len: usize);
}

/// Writes a line to the host's log.
#[allow(dead_code)]
pub fn log(message: &str) {
    unsafe { __console_log(message.as_ptr(), message.len()) }
}

/// Runs `handler(operation, payload)` for one waPC call.
pub fn dispatch(op_len: i32, payload_len: i32, handler: fn(&str, &[u8]) -> Result<Vec<u8>, String>) -> i32 {
    let mut op = vec![0u8; op_len as usize];
    let mut payload = vec![0u8; payload_len as usize];
    unsafe { __guest_request(op.as_mut_ptr(), payload.as_mut_ptr()) };
    let op = String::from_utf8_lossy(&op).into_owned();
    match handler(&op, &payload) {
        Ok(response) => {
            unsafe { __guest_response(response.as_ptr(), response.len()) };
            1
        }
        Err(error) => {
            unsafe { __guest_error(error.as_ptr(), error.len()) };
            0
        }
    }
}

/// Parses a payload as JSON.
pub fn parse(payload: &[u8]) -> Result<serde_json::Value, String> {
    serde_json::from_slice(payload).map_err(|e| format!("cannot parse the payload: {}", e))
}

pub fn accept() -> Vec<u8> {
    br#"{"accepted":true}"#.to_vec()
}

pub fn reject(message: &str, code: u16) -> Vec<u8> {
    serde_json::json!({"accepted": false, "message": message, "code": code}).to_string().into_bytes()
}

pub fn settings_valid() -> Vec<u8> {
    br#"{"valid":true}"#.to_vec()
}

pub fn settings_invalid(message: &str) -> Vec<u8> {
    serde_json::json!({"valid": false, "message": message}).to_string().into_bytes()
}

pub fn protocol_version() -> Vec<u8> {
    br#""v1""#.to_vec()
}

/// Answers the operations every policy shares; `None` for `validate` and unknown ones.
pub fn common_operation(op: &str) -> Option<Result<Vec<u8>, String>> {
    match op {
        "protocol_version" => Some(Ok(protocol_version())),
        "validate" | "validate_settings" => None,
        other => Some(Err(format!("No handler registered for function {}", other))),
    }
}

#[link(wasm_import_module = "wapc")]
extern "C" {
    fn __host_call(
        binding_ptr: *const u8,
        binding_len: usize,
        namespace_ptr: *const u8,
        namespace_len: usize,
        operation_ptr: *const u8,
        operation_len: usize,
        payload_ptr: *const u8,
        payload_len: usize,
    ) -> usize;
    fn __host_response_len() -> usize;
    fn __host_response(ptr: *mut u8);
    fn __host_error_len() -> usize;
    fn __host_error(ptr: *mut u8);
}

/// Asks the host for `namespace`/`operation` (binding `kubewarden`); the host's answer, or
/// its error text.
#[allow(dead_code)]
pub fn host_call(namespace: &str, operation: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
    let binding = "kubewarden";
    let ok = unsafe {
        __host_call(
            binding.as_ptr(),
            binding.len(),
            namespace.as_ptr(),
            namespace.len(),
            operation.as_ptr(),
            operation.len(),
            payload.as_ptr(),
            payload.len(),
        )
    };
    if ok == 1 {
        let mut response = vec![0u8; unsafe { __host_response_len() }];
        unsafe { __host_response(response.as_mut_ptr()) };
        Ok(response)
    } else {
        let mut error = vec![0u8; unsafe { __host_error_len() }];
        unsafe { __host_error(error.as_mut_ptr()) };
        Err(String::from_utf8_lossy(&error).into_owned())
    }
}

/// Accepts with warnings (how the test policies report what the host told them).
#[allow(dead_code)]
pub fn accept_with_warnings(warnings: &[String]) -> Vec<u8> {
    serde_json::json!({"accepted": true, "warnings": warnings}).to_string().into_bytes()
}
