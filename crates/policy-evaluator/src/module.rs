//! A compiled policy module, ready to be instantiated.

use sha2::{Digest, Sha256};
use wasmtime::{InstancePre, Module};

use crate::engine::PolicyEngine;
use crate::error::LoadError;
use crate::metadata::{ExecutionMode, Metadata};
use crate::wapc::{self, HostState};

/// A module whose metadata was checked, compiled once and linked against the host (WASI and
/// the waPC imports): every evaluation instantiates it afresh from here.
pub struct PolicyModule {
    pub(crate) engine: PolicyEngine,
    pub(crate) pre: InstancePre<HostState>,
    metadata: Metadata,
    digest: String,
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
        if !matches!(
            metadata.execution_mode,
            ExecutionMode::KubewardenWapc | ExecutionMode::Wasi
        ) {
            return Err(LoadError::UnsupportedMode(metadata.execution_mode));
        }
        let module =
            Module::new(engine.engine(), wasm).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        let linker =
            wapc::linker(engine.engine()).map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let digest = format!("sha256:{:x}", Sha256::digest(wasm));
        Ok(PolicyModule {
            engine,
            pre,
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
