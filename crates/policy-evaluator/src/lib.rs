//! Runs Kubewarden WebAssembly policies on wasmtime.
//!
//! ```text
//! PolicyEngine ──load(wasm)──▶ PolicyModule ──PolicyEvaluator::new(module, settings)──▶ validate(request)
//! (one per process:            (metadata checked,         (settings, limits,              (fresh instance per
//!  epoch ticker, disk cache)    compiled once, linked)      host capabilities)               evaluation)
//! ```
//!
//! - [`metadata`]: the `io.kubewarden.metadata` custom section: read, validate, write.
//! - [`PolicyEngine`]: the shared wasmtime `Engine` with epoch interruption and an optional
//!   compile cache on disk.
//! - [`PolicyModule`]: a compiled module with its `InstancePre`.
//! - [`PolicyEvaluator`]: `validate`, `validate_raw`, `validate_settings`, `protocol_version`.
//! - [`response`]: ValidationResponse → AdmissionResponse, mutations as JSON Patch.
//! - [`host`]: host capabilities and their grants.
//! - [`limits`]: deadline and memory cap of each evaluation.
//!
//! Execution modes: `kubewarden-wapc` guests run today; modules declaring `wasi`, `opa` or
//! `gatekeeper` are refused at load time with [`LoadError::UnsupportedMode`].
//!
//! The API is synchronous; callers choose the threads (the policy-server uses a bounded pool).

mod engine;
mod error;
mod evaluator;
pub mod host;
pub mod limits;
pub mod metadata;
mod module;
pub mod response;
mod wapc;

pub use engine::{EPOCH_TICK, EngineOptions, PolicyEngine};
pub use error::{EvaluationError, LoadError};
pub use evaluator::{EvaluatorSettings, PolicyEvaluator};
pub use limits::EvaluationLimits;
pub use module::PolicyModule;
