//! `kubewarden-wapc` guests: each operation is one `__guest_call` (see [`super::host_imports`])
//! in an instance that is initialised once and kept for the next call while calls succeed.

use wasmtime::{Instance, InstancePre, Memory, Store, TypedFunc};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use super::guest::{self, classify_in};
use super::host_imports::{HostState, WapcCall};
use super::{PolicyContext, PolicyRuntime, Request, Target};
use crate::error::EvaluationError;
use crate::limits::deadline_ticks;
use crate::response::{AdmissionResponse, SettingsValidationResponse};
use crate::reuse::{IdleInstances, Reusable};

/// A waPC instance, initialised (`_start`, `wapc_init`) and kept for the next evaluation.
struct WarmInstance {
    store: Store<HostState>,
    guest_call: TypedFunc<(i32, i32), i32>,
    memory: Option<Memory>,
}

impl Reusable for WarmInstance {
    fn memory_bytes(&mut self) -> usize {
        self.memory
            .map_or(0, |memory| memory.data_size(&mut self.store))
    }
}

/// One evaluator's waPC runtime: the linked module and the instances kept for reuse.
pub(super) struct WapcRuntime {
    pre: InstancePre<HostState>,
    idle: IdleInstances<WarmInstance>,
}

impl WapcRuntime {
    pub(super) fn new(pre: InstancePre<HostState>, reused_instances: usize) -> Self {
        WapcRuntime {
            pre,
            idle: IdleInstances::new(reused_instances),
        }
    }

    /// One waPC call, in an idle instance if there is one, else in a new one.
    fn call(
        &self,
        policy: &PolicyContext,
        operation: &str,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, EvaluationError> {
        let mut instance = match self.idle.take() {
            Some(mut instance) => {
                instance
                    .store
                    .set_epoch_deadline(policy.limits.timeout.map_or(u64::MAX, deadline_ticks));
                instance
            }
            None => self.new_instance(policy)?,
        };
        let answer = guest_call(policy, &mut instance, operation, payload);
        if answer.is_ok() {
            self.idle.put_back(instance);
        }
        answer
    }

    /// A new instance, its initialisers run.
    fn new_instance(&self, policy: &PolicyContext) -> Result<WarmInstance, EvaluationError> {
        let wasi = WasiCtxBuilder::new()
            .inherit_stdout()
            .inherit_stderr()
            .build_p1();
        let mut store = guest::new_store(&self.pre, policy, wasi);
        let instance = guest::instantiate(&self.pre, policy, &mut store)?;
        run_start_functions(&mut store, &instance)
            .map_err(|err| classify_in(&store, err, policy))?;
        if instance.get_func(&mut store, "__guest_call").is_none() {
            return Err(EvaluationError::MissingExport("__guest_call"));
        }
        let guest_call = instance
            .get_typed_func::<(i32, i32), i32>(&mut store, "__guest_call")
            .map_err(|source| EvaluationError::WrongSignature {
                export: "__guest_call",
                source,
            })?;
        let memory = instance.get_memory(&mut store, "memory");
        Ok(WarmInstance {
            store,
            guest_call,
            memory,
        })
    }
}

impl PolicyRuntime for WapcRuntime {
    fn validate(
        &self,
        policy: &PolicyContext,
        uid: &str,
        request: &Request<'_>,
        target: Target,
    ) -> Result<AdmissionResponse, EvaluationError> {
        guest::validate(policy, uid, request, target, |operation, payload| {
            self.call(policy, operation, payload)
        })
    }

    fn validate_settings(
        &self,
        policy: &PolicyContext,
    ) -> Result<SettingsValidationResponse, EvaluationError> {
        guest::validate_settings(policy, |operation, payload| {
            self.call(policy, operation, payload)
        })
    }

    fn protocol_version(&self, policy: &PolicyContext) -> Result<String, EvaluationError> {
        guest::parse(
            &self.call(policy, "protocol_version", Vec::new())?,
            "protocol version",
        )
    }

    fn idle_memory_bytes(&self) -> usize {
        self.idle.memory_bytes()
    }

    fn reused_instances(&self) -> usize {
        self.idle.capacity()
    }
}

fn guest_call(
    policy: &PolicyContext,
    instance: &mut WarmInstance,
    operation: &str,
    payload: Vec<u8>,
) -> Result<Vec<u8>, EvaluationError> {
    let (op_len, payload_len) = (len_arg(operation.len())?, len_arg(payload.len())?);
    let store = &mut instance.store;
    store.data_mut().call = WapcCall::new(operation, payload);
    let status = instance
        .guest_call
        .call(&mut *store, (op_len, payload_len))
        .map_err(|err| classify_in(store, err, policy))?;
    let call = &mut store.data_mut().call;
    if status == 1 {
        call.guest_response
            .take()
            .ok_or_else(|| EvaluationError::InvalidAnswer {
                expected: "waPC response",
                reason: "the policy reported success without a response".into(),
            })
    } else {
        Err(EvaluationError::Guest(
            call.guest_error
                .take()
                .unwrap_or_else(|| "the policy failed without an error message".into()),
        ))
    }
}

fn len_arg(len: usize) -> Result<i32, EvaluationError> {
    i32::try_from(len).map_err(|_| {
        EvaluationError::InvalidRequest(format!("{len} bytes is too large for a policy"))
    })
}

/// Runs the initialisers a guest exports, in the order upstream does: `_start` (TinyGo and Go
/// runtimes), then `wapc_init` (Rust SDK). A `_start` that ends with `proc_exit(0)` succeeded.
/// Beyond upstream, a WASI reactor's `_initialize` (without a `_start`, and taking and
/// returning nothing, as WASI defines it) runs where `_start` would: standard Go
/// (`-buildmode=c-shared` with `go:wasmexport`) starts its runtime there; Rust reactors run
/// their static constructors.
fn run_start_functions(store: &mut Store<HostState>, instance: &Instance) -> wasmtime::Result<()> {
    let has_start = instance.get_func(&mut *store, "_start").is_some();
    for name in ["_start", "_initialize", "wapc_init"] {
        // Look the export up before typing it: a missing export would otherwise build an
        // error value per evaluation (with a backtrace when RUST_BACKTRACE is set).
        let Some(export) = instance.get_func(&mut *store, name) else {
            continue;
        };
        if name == "_initialize" {
            let signature = export.ty(&*store);
            if has_start || signature.params().len() != 0 || signature.results().len() != 0 {
                continue;
            }
        }
        let function = instance.get_typed_func::<(), ()>(&mut *store, name)?;
        if let Err(err) = function.call(&mut *store, ()) {
            match err.downcast_ref::<I32Exit>() {
                Some(I32Exit(0)) => {}
                _ => return Err(err),
            }
        }
    }
    Ok(())
}
