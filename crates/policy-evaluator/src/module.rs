//! A compiled policy module, ready to be instantiated.

use sha2::{Digest, Sha256};

use crate::engine::PolicyEngine;
use crate::error::LoadError;
use crate::metadata::Metadata;
use crate::runtime::{self, Linked};

/// A module whose metadata was checked, compiled once and linked against the host: every
/// evaluation instantiates it afresh from here.
pub struct PolicyModule {
    /// Held so that the engine's epoch ticker, which enforces this module's deadlines, runs
    /// as long as the module can be evaluated.
    _engine: PolicyEngine,
    linked: Linked,
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

impl PolicyEngine {
    /// Reads a module's metadata, compiles it (or takes it from the cache) and prepares it for
    /// instantiation.
    pub fn load(&self, wasm: &[u8]) -> Result<PolicyModule, LoadError> {
        let metadata = Metadata::required_from_module(wasm)?;
        self.load_with_metadata(wasm, metadata)
    }

    /// [`load`](Self::load), running the module as `metadata` says instead of as its own
    /// metadata section does (which it need not have): a module tried out with an execution
    /// mode given by hand.
    pub fn load_with_metadata(
        &self,
        wasm: &[u8],
        metadata: Metadata,
    ) -> Result<PolicyModule, LoadError> {
        let module = self.compile(wasm)?;
        let linked = runtime::link(module, metadata.execution_mode)?;
        Ok(PolicyModule {
            _engine: self.clone(),
            linked,
            metadata,
            digest: format!("sha256:{:x}", Sha256::digest(wasm)),
        })
    }
}

impl PolicyModule {
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// `sha256:<hex>` of the module bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The module linked for its execution mode.
    pub(crate) fn linked(&self) -> &Linked {
        &self.linked
    }
}
