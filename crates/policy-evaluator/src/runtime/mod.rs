//! The three ways a policy module is run, one module each, behind one trait:
//!
//! - [`wapc`]: `kubewarden-wapc` guests, called through `__guest_call` in instances that are
//!   kept and reused;
//! - [`wasi`]: `wasi` commands, run once per call with the operation in argv and the payload
//!   on stdin;
//! - [`rego`]: Rego compiled by OPA, in the `opa` and `gatekeeper` modes, on OPA's ABI
//!   ([`opa`]).
//!
//! A module is linked once for its execution mode ([`link`]); each evaluator picks the
//! runtime for it once ([`Linked::runtime`]) and calls it through [`PolicyRuntime`].

mod guest;
mod host_imports;
mod opa;
mod rego;
mod wapc;
mod wasi;
mod wasi_stdin;

use std::sync::Arc;

use serde_json::Value;
use wasmtime::{InstancePre, Module};

use crate::admission::DecodedRequest;
use crate::error::{EvaluationError, LoadError};
use crate::host::HostCapabilities;
use crate::limits::EvaluationLimits;
use crate::metadata::ExecutionMode;
use crate::response::{AdmissionResponse, SettingsValidationResponse};

use host_imports::HostState;

/// What every evaluation of one policy shares, whatever runs it.
pub(crate) struct PolicyContext {
    /// Id the policy is served under; used in logs and host-capability calls.
    pub(crate) policy_id: Arc<str>,
    pub(crate) settings: Value,
    /// `settings` as JSON text, serialized once: every waPC and WASI payload embeds it.
    pub(crate) settings_json: Vec<u8>,
    pub(crate) limits: EvaluationLimits,
    pub(crate) granted: Arc<[String]>,
    pub(crate) host: Arc<dyn HostCapabilities>,
}

/// A request as a caller has it: parsed already, or decoded from a webhook body (its text
/// at hand, parsed only on demand).
pub(crate) enum Request<'a> {
    Parsed(&'a Value),
    Decoded(&'a DecodedRequest),
}

impl Request<'_> {
    pub(crate) fn value(&self) -> &Value {
        match self {
            Request::Parsed(value) => value,
            Request::Decoded(decoded) => decoded.value(),
        }
    }

    /// The `uid` member, if it is a string.
    pub(crate) fn uid(&self) -> Option<&str> {
        match self {
            Request::Parsed(value) => value.get("uid").and_then(Value::as_str),
            Request::Decoded(decoded) => decoded.uid_member(),
        }
    }
}

/// What a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// A Kubernetes AdmissionRequest; a mutation patches its `object`.
    Admission,
    /// A free-form document (raw policies); a mutation patches the whole document.
    Document,
}

/// One execution mode's way of answering the evaluator's three questions.
pub(crate) trait PolicyRuntime: Send + Sync {
    /// The policy's verdict on `request`, `uid` being the answer's uid.
    fn validate(
        &self,
        policy: &PolicyContext,
        uid: &str,
        request: &Request<'_>,
        target: Target,
    ) -> Result<AdmissionResponse, EvaluationError>;

    /// Whether the policy accepts its settings.
    fn validate_settings(
        &self,
        policy: &PolicyContext,
    ) -> Result<SettingsValidationResponse, EvaluationError>;

    /// The waPC protocol version the guest reports.
    fn protocol_version(&self, policy: &PolicyContext) -> Result<String, EvaluationError>;

    /// Linear memory held by instances kept for reuse, in bytes.
    fn idle_memory_bytes(&self) -> usize {
        0
    }

    /// How many instances are kept for reuse, at most.
    fn reused_instances(&self) -> usize {
        0
    }

    /// A result the runtime could not read as a verdict (Gatekeeper only; see
    /// [`crate::PolicyEvaluator::result_not_understood`]).
    fn result_not_understood(&self) -> Option<&str> {
        None
    }
}

/// A compiled module linked for its execution mode: what all evaluators of the module share.
pub(crate) enum Linked {
    Wapc(InstancePre<HostState>),
    Wasi(InstancePre<HostState>),
    Opa {
        module: Arc<opa::OpaModule>,
        gatekeeper: bool,
    },
}

/// Links `module` against the host imports its execution mode provides.
pub(crate) fn link(module: Module, mode: ExecutionMode) -> Result<Linked, LoadError> {
    let instance_pre = |module: &Module| {
        host_imports::linker(module.engine())
            .and_then(|linker| linker.instantiate_pre(module))
            .map_err(LoadError::Link)
    };
    Ok(match mode {
        ExecutionMode::KubewardenWapc => Linked::Wapc(instance_pre(&module)?),
        ExecutionMode::Wasi => Linked::Wasi(instance_pre(&module)?),
        ExecutionMode::Opa | ExecutionMode::Gatekeeper => Linked::Opa {
            module: Arc::new(opa::OpaModule::new(module)?),
            gatekeeper: mode == ExecutionMode::Gatekeeper,
        },
    })
}

impl Linked {
    /// The runtime of one evaluator of this module, keeping at most `reused_instances` idle
    /// instances.
    pub(crate) fn runtime(&self, reused_instances: usize) -> Arc<dyn PolicyRuntime> {
        match self {
            Linked::Wapc(pre) => Arc::new(wapc::WapcRuntime::new(pre.clone(), reused_instances)),
            Linked::Wasi(pre) => Arc::new(wasi::WasiRuntime::new(pre.clone())),
            Linked::Opa { module, gatekeeper } => Arc::new(rego::RegoRuntime::new(
                module.clone(),
                *gatekeeper,
                reused_instances,
            )),
        }
    }
}
