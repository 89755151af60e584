//! Errors of loading and of evaluating a policy. Each names what went wrong in words an
//! operator can act on and keeps its cause as its [`source`](std::error::Error::source)
//! (print them with [`api_types::error_text::with_causes`]); none leaves the evaluator
//! unusable. Text stands in for a cause only where it comes from the guest: its error
//! message, what it answered, what a host capability told it.

use std::time::Duration;

use wasmtime::Trap;

use crate::limits::EvaluationLimits;

use crate::metadata::MetadataError;

/// A module cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot set up the WebAssembly engine")]
    Engine(#[source] wasmtime::Error),
    #[error("cannot start the epoch ticker that enforces deadlines")]
    EpochTicker(#[source] std::io::Error),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(
        "the Rego policy needs built-in functions this policy-server does not provide: {}",
        .0.join(", ")
    )]
    UnsupportedBuiltins(Vec<String>),
    #[error("cannot compile the module")]
    Compile(#[source] wasmtime::Error),
    #[error("cannot link the module")]
    Link(#[source] wasmtime::Error),
    #[error("not a usable OPA WebAssembly module")]
    NotOpaModule(#[source] wasmtime::Error),
    #[error("cannot use the compile cache directory {}", dir.display())]
    CompileCacheDirectory {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the OPA module {0}")]
    OpaModule(String),
}

/// One evaluation failed. The evaluator stays usable for the next one.
#[derive(Debug, thiserror::Error)]
pub enum EvaluationError {
    #[error("Policy execution interrupted because it exceeded the allowed execution time ({0:?})")]
    Timeout(Duration),
    #[error("the policy exceeded its memory limit of {limit_bytes} bytes")]
    MemoryLimit { limit_bytes: usize },
    #[error("the policy overflowed its stack")]
    StackOverflow,
    #[error("the policy trapped: {0}")]
    Trap(Trap),
    /// The guest's call ended in an error that is not a trap: a host import refused what the
    /// guest passed it, say.
    #[error("the policy failed")]
    Failed(#[source] wasmtime::Error),
    #[error("the policy returned an error: {0}")]
    Guest(String),
    #[error("the policy answered something that is not a {expected}: {reason}")]
    InvalidAnswer {
        expected: &'static str,
        reason: String,
    },
    #[error("cannot instantiate the policy")]
    Instantiation(#[source] wasmtime::Error),
    #[error("the policy does not export {0}")]
    MissingExport(&'static str),
    #[error("the policy's export {export} has the wrong signature")]
    WrongSignature {
        export: &'static str,
        #[source]
        source: wasmtime::Error,
    },
    #[error("the request is not valid: {0}")]
    InvalidRequest(String),
    #[error("cannot read the policy's context: {0}")]
    Context(String),
}

/// The limit a failed call ran into, if it was one: the memory limit (when the limiter refused
/// a growth), the deadline, or the stack.
pub(crate) fn limit_reached(
    err: &wasmtime::Error,
    memory_exceeded: bool,
    limits: &EvaluationLimits,
) -> Option<EvaluationError> {
    if memory_exceeded {
        return Some(EvaluationError::MemoryLimit {
            limit_bytes: limits.memory_bytes,
        });
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Some(EvaluationError::Timeout(limits.timeout.unwrap_or_default())),
        Some(Trap::StackOverflow) => Some(EvaluationError::StackOverflow),
        _ => None,
    }
}

/// Names the cause of a failed call: a limit, another trap, or another error.
pub(crate) fn classify(
    err: wasmtime::Error,
    memory_exceeded: bool,
    limits: &EvaluationLimits,
) -> EvaluationError {
    if let Some(limit) = limit_reached(&err, memory_exceeded, limits) {
        return limit;
    }
    match err.downcast_ref::<Trap>() {
        Some(trap) => EvaluationError::Trap(*trap),
        None => EvaluationError::Failed(err),
    }
}
