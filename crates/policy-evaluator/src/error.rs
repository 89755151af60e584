//! Errors of loading and of evaluating a policy. Each names what went wrong in words an
//! operator can act on; none leaves the evaluator unusable.

use std::time::Duration;

use wasmtime::Trap;

use crate::limits::EvaluationLimits;

use crate::metadata::MetadataError;

/// A module cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(
        "the Rego policy needs built-in functions this policy-server does not provide: {}",
        .0.join(", ")
    )]
    UnsupportedBuiltins(Vec<String>),
    #[error("cannot compile the module: {0}")]
    Compile(String),
    #[error("cannot link the module: {0}")]
    Link(String),
}

/// One evaluation failed. The evaluator stays usable for the next one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EvaluationError {
    #[error("Policy execution interrupted because it exceeded the allowed execution time ({0:?})")]
    Timeout(Duration),
    #[error("the policy exceeded its memory limit of {limit_bytes} bytes")]
    MemoryLimit { limit_bytes: usize },
    #[error("the policy overflowed its stack")]
    StackOverflow,
    #[error("the policy trapped: {0}")]
    Trap(String),
    #[error("the policy returned an error: {0}")]
    Guest(String),
    #[error("the policy answered something that is not a {expected}: {reason}")]
    InvalidAnswer {
        expected: &'static str,
        reason: String,
    },
    #[error("cannot instantiate the policy: {0}")]
    Instantiation(String),
    #[error("the policy does not export {0}")]
    MissingExport(&'static str),
    #[error("the request is not valid: {0}")]
    InvalidRequest(String),
    #[error("cannot read the policy's context: {0}")]
    Context(String),
}

/// Names the cause of a failed call: the memory limit (when the limiter refused a growth), the
/// deadline, a stack overflow or another trap.
pub(crate) fn classify(
    err: wasmtime::Error,
    memory_exceeded: bool,
    limits: &EvaluationLimits,
) -> EvaluationError {
    if memory_exceeded {
        return EvaluationError::MemoryLimit {
            limit_bytes: limits.memory_bytes,
        };
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => EvaluationError::Timeout(limits.timeout.unwrap_or_default()),
        Some(Trap::StackOverflow) => EvaluationError::StackOverflow,
        Some(trap) => EvaluationError::Trap(trap.to_string()),
        None => EvaluationError::Trap(format!("{err:#}")),
    }
}
