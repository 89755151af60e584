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
//! - [`admission`]: a webhook body's `request` ([`admission::DecodedRequest`]: its JSON text as
//!   received, which waPC and WASI guests get without a re-serialization, the few members the
//!   host reads, and the parsed tree only when asked for), and a policy's answer shaped by its
//!   mode, mutation permission and custom message.
//! - [`host`]: host capabilities and their grants.
//! - [`limits`]: deadline and memory cap of each evaluation.
//! - `runtime` (private): one module per way of running a module (waPC, WASI, Rego on OPA's
//!   ABI) behind one trait; a module is linked once for its execution mode and each evaluator
//!   picks its runtime once.
//!
//! Execution modes: `kubewarden-wapc` guests, `wasi` commands, and Rego compiled by
//! `opa build -t wasm` in the `opa` and `gatekeeper` modes (OPA's WebAssembly ABI, with the
//! built-ins the compiler leaves to the host; a module needing one not provided here is refused
//! at load time with [`LoadError::UnsupportedBuiltins`]).
//!
//! The API is synchronous; callers choose the threads (the policy-server uses a bounded pool).
//!
//! # Instance strategy, measured
//!
//! An instance whose evaluation succeeded is kept and reused for the next evaluation of the
//! same policy (at most [`EvaluatorSettings::reused_instances`] idle per policy, each at most
//! [`MAX_REUSED_MEMORY_BYTES`] of linear memory); an instance whose evaluation failed in any
//! way (trap, deadline, memory limit, guest error) is dropped. waPC guests keep their heap
//! between requests, as under upstream's policy-server, which reuses instances the same way;
//! Rego instances restart every evaluation from the heap as it was after loading the data
//! document, as OPA's own SDK does. WASI commands exit after one evaluation and always start
//! afresh. `reused_instances: 0` gives every evaluation a fresh instance.
//!
//! From `cargo bench -p policy-evaluator` on the 2-core development machine (criterion,
//! median of one `validate` call including JSON in and out):
//!
//! | policy | fresh, on-demand allocation | fresh, pooling allocator | reused |
//! |---|---|---|---|
//! | accept-all | 52 µs | 36 µs | 6.3 µs |
//! | reject-by-label | 57 µs | 38 µs | 10.6 µs |
//! | mutate-add-label | 74 µs | 49 µs | 20 µs |
//! | opa-reject-by-label | 91 µs | 81 µs | 8.8 µs |
//! | gatekeeper-reject-by-label | 80 µs | 81 µs | 8.2 µs |
//!
//! A reused instance holds 1.1 MiB of linear memory (Rust test policies) or 128 KiB (Rego). Compiling
//! `reject-by-label` (80 KB) takes 52 ms without the cache. The pooling allocator
//! ([`EngineOptions::pooling`]) saves a third of a fresh instantiation by reusing pre-mapped
//! memory slots; size it for the instances in flight plus the idle ones.

pub mod admission;
mod compile_cache;
mod engine;
mod error;
mod evaluator;
pub mod host;
pub mod limits;
/// The module metadata section, defined in [`api_types::metadata`] so that tools which only
/// read or write it (xtask, kwctl) need not compile the WebAssembly runtime.
pub use api_types::metadata;
mod module;
pub mod response;
mod reuse;
mod runtime;

pub use engine::{EngineOptions, PolicyEngine, PoolingOptions};
pub use error::{EvaluationError, LoadError};
pub use evaluator::{EvaluatorSettings, PolicyEvaluator};
pub use limits::{EPOCH_TICK, EvaluationLimits};
pub use module::PolicyModule;
pub use reuse::MAX_REUSED_MEMORY_BYTES;
