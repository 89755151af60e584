//! A policy that misbehaves on purpose, chosen by the `behaviour` setting of each request:
//! `loop` never returns, `allocate` grows memory without bound, `trap` executes an
//! unreachable instruction, `recurse` overflows the engine's stack, `guest-error` reports an error,
//! `garbage` answers with something that is not a ValidationResponse. Anything else accepts,
//! so the evaluator can show it still works after each failure.

#[allow(dead_code)]
#[path = "../../common/wapc.rs"]
mod wapc;

use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Recursion that keeps everything in wasm locals, so it exhausts the engine's stack (not
/// the shadow stack in linear memory). Multiply-then-add after the call keeps LLVM from
/// turning it into a loop.
#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    COUNTER.store(depth, Ordering::Relaxed);
    recurse(depth + 1).wrapping_mul(3).wrapping_add(depth)
}

fn handle(op: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
    if let Some(answer) = wapc::common_operation(op) {
        return answer;
    }
    let payload = wapc::parse(payload)?;
    if op == "validate_settings" {
        return Ok(wapc::settings_valid());
    }
    match payload["settings"]["behaviour"].as_str().unwrap_or("") {
        "loop" => loop {
            // An atomic store is a side effect the optimiser must keep.
            COUNTER.fetch_add(1, Ordering::Relaxed);
        },
        "allocate" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                COUNTER.store(hoard.len() as u64, Ordering::Relaxed);
            }
        }
        "trap" => core::arch::wasm32::unreachable(),
        "recurse" => {
            let n = recurse(0);
            Ok(wapc::reject(&format!("unreachable {}", n), 500))
        }
        "guest-error" => Err("the policy failed on purpose".to_string()),
        "garbage" => Ok(b"this is not JSON".to_vec()),
        _ => Ok(wapc::accept()),
    }
}

#[no_mangle]
pub extern "C" fn __guest_call(op_len: i32, payload_len: i32) -> i32 {
    wapc::dispatch(op_len, payload_len, handle)
}
