//! A compiled policy module, ready to be instantiated.

use sha2::{Digest, Sha256};
use wasmtime::InstancePre;

use crate::engine::PolicyEngine;
use crate::error::LoadError;
use crate::metadata::{ExecutionMode, Metadata};
use crate::opa::OpaModule;
use crate::wapc::{self, HostState};

/// A module whose metadata was checked, compiled once and linked against the host: every
/// evaluation instantiates it afresh from here.
pub struct PolicyModule {
    pub(crate) engine: PolicyEngine,
    pub(crate) runtime: Runtime,
    metadata: Metadata,
    digest: String,
}

/// How a module is linked, by execution mode.
pub(crate) enum Runtime {
    /// waPC guests and WASI commands: WASI preview 1 plus the `wapc` imports.
    Wasm(InstancePre<HostState>),
    /// Rego compiled by OPA (`opa` and `gatekeeper` modes).
    Opa(OpaModule),
}

impl std::fmt::Debug for PolicyModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyModule")
            .field("digest", &self.digest)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

impl PolicyModule {
    pub(crate) fn new(engine: PolicyEngine, wasm: &[u8]) -> Result<Self, LoadError> {
        let metadata = Metadata::required_from_module(wasm)?;
        Self::with_metadata(engine, wasm, metadata)
    }

    /// A module run as `metadata` says, whatever its own metadata section holds (none, or
    /// another execution mode): what `kwctl run --execution-mode` needs.
    pub(crate) fn with_metadata(
        engine: PolicyEngine,
        wasm: &[u8],
        metadata: Metadata,
    ) -> Result<Self, LoadError> {
        let module = engine.compile(wasm)?;
        let runtime = match metadata.execution_mode {
            ExecutionMode::KubewardenWapc | ExecutionMode::Wasi => {
                let linker =
                    wapc::linker(engine.engine()).map_err(|e| LoadError::Link(format!("{e:#}")))?;
                Runtime::Wasm(
                    linker
                        .instantiate_pre(&module)
                        .map_err(|e| LoadError::Link(format!("{e:#}")))?,
                )
            }
            ExecutionMode::Opa | ExecutionMode::Gatekeeper => {
                Runtime::Opa(OpaModule::new(&engine, module)?)
            }
        };
        let digest = format!("sha256:{:x}", Sha256::digest(wasm));
        Ok(PolicyModule {
            engine,
            runtime,
            metadata,
            digest,
        })
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// `sha256:<hex>` of the module bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}
