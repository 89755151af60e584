//! Runs Kubewarden WebAssembly policies (waPC, WASI, OPA and Gatekeeper guests) on wasmtime.
//!
//! This crate is the project skeleton: the evaluator is not implemented yet. It will hold the
//! shared wasmtime `Engine`, one pre-instantiated module per policy digest, the waPC host with
//! its host capabilities, and per-evaluation time and memory limits.
