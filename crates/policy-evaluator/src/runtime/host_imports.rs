//! The host side of the waPC protocol: the nine `wapc` imports a guest may use, on top of
//! WASI preview 1 (and the legacy `wasi_unstable` module old TinyGo guests import).
//!
//! One call: the host stores the operation and payload, calls the guest's `__guest_call`,
//! the guest fetches them with `__guest_request`, may call back with `__host_call`, and answers
//! with `__guest_response` (returning 1) or `__guest_error` (returning 0).

use std::sync::Arc;

use wasmtime::{Caller, Engine, Extern, Linker, Memory};
use wasmtime_wasi::p1::WasiP1Ctx;

use super::wasi_stdin::GrowingStdin;
use crate::host::{self, HostCapabilities};
use crate::limits::MemoryLimiter;

/// The state of one in-flight call.
#[derive(Debug, Default)]
pub(crate) struct WapcCall {
    pub(crate) operation: Vec<u8>,
    pub(crate) payload: Vec<u8>,
    pub(crate) guest_response: Option<Vec<u8>>,
    pub(crate) guest_error: Option<String>,
    host_response: Option<Vec<u8>>,
    host_error: Option<String>,
}

impl WapcCall {
    /// The state at the start of a call of `operation`, nothing left from the previous one.
    pub(crate) fn new(operation: &str, payload: Vec<u8>) -> Self {
        WapcCall {
            operation: operation.as_bytes().to_vec(),
            payload,
            ..WapcCall::default()
        }
    }
}

/// What a store of a policy instance holds.
pub(crate) struct HostState {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) call: WapcCall,
    pub(crate) policy_id: Arc<str>,
    pub(crate) granted: Arc<[String]>,
    pub(crate) host: Arc<dyn HostCapabilities>,
    /// The stdin of a WASI command, where `host.call` answers go.
    pub(crate) stdin: Option<GrowingStdin>,
}

type HostResult<T> = wasmtime::Result<T>;

fn memory(caller: &mut Caller<'_, HostState>) -> HostResult<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => Err(wasmtime::Error::msg(
            "the policy does not export its linear memory as `memory`",
        )),
    }
}

fn to_offset(value: i32) -> usize {
    // waPC passes 32-bit pointers and lengths as i32; reinterpret, never sign-extend.
    value as u32 as usize
}

fn read(caller: &mut Caller<'_, HostState>, ptr: i32, len: i32) -> HostResult<Vec<u8>> {
    let memory = memory(caller)?;
    let (ptr, len) = (to_offset(ptr), to_offset(len));
    // Check against the memory size before allocating, so a bogus length cannot make the host
    // allocate gigabytes.
    if ptr
        .checked_add(len)
        .is_none_or(|end| end > memory.data_size(&*caller))
    {
        return Err(wasmtime::Error::msg(format!(
            "the policy passed a buffer ({len} bytes at {ptr}) outside its memory"
        )));
    }
    let mut buffer = vec![0; len];
    memory.read(&*caller, ptr, &mut buffer)?;
    Ok(buffer)
}

fn write(caller: &mut Caller<'_, HostState>, ptr: i32, data: &[u8]) -> HostResult<()> {
    let memory = memory(caller)?;
    memory.write(caller, to_offset(ptr), data).map_err(|_| {
        wasmtime::Error::msg(format!(
            "the policy asked for {} bytes at {} outside its memory",
            data.len(),
            to_offset(ptr)
        ))
    })
}

fn len_i32(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

/// Reads the four strings of a host call from guest memory and routes it.
fn host_call(
    caller: &mut Caller<'_, HostState>,
    buffers: [(i32, i32); 4],
) -> HostResult<Result<Vec<u8>, String>> {
    let [binding, namespace, operation, payload] = buffers;
    let binding = read(caller, binding.0, binding.1)?;
    let namespace = read(caller, namespace.0, namespace.1)?;
    let operation = read(caller, operation.0, operation.1)?;
    let payload = read(caller, payload.0, payload.1)?;
    let state = caller.data();
    Ok(host::dispatch(
        state.host.as_ref(),
        &state.policy_id,
        &state.granted,
        &String::from_utf8_lossy(&binding),
        &String::from_utf8_lossy(&namespace),
        &String::from_utf8_lossy(&operation),
        &payload,
    ))
}

/// A linker with WASI, the `wapc` imports and the WASI policies' `host.call`.
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker: Linker<HostState> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |state| &mut state.wasi)?;
    wasmtime_wasi::p0::add_to_linker_sync(&mut linker, |state| &mut state.wasi)?;

    linker.func_wrap(
        "wapc",
        "__guest_request",
        |mut caller: Caller<'_, HostState>, op_ptr: i32, payload_ptr: i32| {
            let operation = std::mem::take(&mut caller.data_mut().call.operation);
            let payload = std::mem::take(&mut caller.data_mut().call.payload);
            write(&mut caller, op_ptr, &operation)?;
            write(&mut caller, payload_ptr, &payload)
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__guest_response",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
            let response = read(&mut caller, ptr, len)?;
            caller.data_mut().call.guest_response = Some(response);
            Ok(())
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__guest_error",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
            let error = read(&mut caller, ptr, len)?;
            caller.data_mut().call.guest_error = Some(String::from_utf8_lossy(&error).into_owned());
            Ok(())
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__host_call",
        |mut caller: Caller<'_, HostState>,
         binding_ptr: i32,
         binding_len: i32,
         namespace_ptr: i32,
         namespace_len: i32,
         operation_ptr: i32,
         operation_len: i32,
         payload_ptr: i32,
         payload_len: i32|
         -> HostResult<i32> {
            let answer = host_call(
                &mut caller,
                [
                    (binding_ptr, binding_len),
                    (namespace_ptr, namespace_len),
                    (operation_ptr, operation_len),
                    (payload_ptr, payload_len),
                ],
            )?;
            let call = &mut caller.data_mut().call;
            match answer {
                Ok(response) => {
                    call.host_response = Some(response);
                    call.host_error = None;
                    Ok(1)
                }
                Err(error) => {
                    call.host_response = None;
                    call.host_error = Some(error);
                    Ok(0)
                }
            }
        },
    )?;
    // WASI policies (Kubewarden's Go SDK): the same call, answered on stdin, 0 for success.
    linker.func_wrap(
        "host",
        "call",
        |mut caller: Caller<'_, HostState>,
         binding_ptr: i32,
         binding_len: i32,
         namespace_ptr: i32,
         namespace_len: i32,
         operation_ptr: i32,
         operation_len: i32,
         payload_ptr: i32,
         payload_len: i32|
         -> HostResult<i32> {
            let answer = host_call(
                &mut caller,
                [
                    (binding_ptr, binding_len),
                    (namespace_ptr, namespace_len),
                    (operation_ptr, operation_len),
                    (payload_ptr, payload_len),
                ],
            )?;
            let Some(stdin) = caller.data().stdin.clone() else {
                return Err(wasmtime::Error::msg(
                    "host.call is only available to WASI policies",
                ));
            };
            Ok(match answer {
                Ok(response) => {
                    stdin.append(&response);
                    0
                }
                Err(error) => {
                    stdin.append(error.as_bytes());
                    1
                }
            })
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__host_response_len",
        |caller: Caller<'_, HostState>| {
            len_i32(
                caller
                    .data()
                    .call
                    .host_response
                    .as_ref()
                    .map_or(0, Vec::len),
            )
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__host_response",
        |mut caller: Caller<'_, HostState>, ptr: i32| {
            let response = caller.data().call.host_response.clone().unwrap_or_default();
            write(&mut caller, ptr, &response)
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__host_error_len",
        |caller: Caller<'_, HostState>| {
            len_i32(
                caller
                    .data()
                    .call
                    .host_error
                    .as_ref()
                    .map_or(0, String::len),
            )
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__host_error",
        |mut caller: Caller<'_, HostState>, ptr: i32| {
            let error = caller.data().call.host_error.clone().unwrap_or_default();
            write(&mut caller, ptr, error.as_bytes())
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__console_log",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
            let line = read(&mut caller, ptr, len)?;
            let policy = caller.data().policy_id.clone();
            tracing::info!(policy = %policy, "{}", String::from_utf8_lossy(&line));
            Ok(())
        },
    )?;
    Ok(linker)
}
