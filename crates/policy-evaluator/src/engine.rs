//! The shared wasmtime [`Engine`]: one per process, with epoch-based deadlines and an optional
//! on-disk cache of compiled modules ([`crate::compile_cache`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Module, OptLevel, PoolingAllocationConfig,
};

use crate::compile_cache::{self, CompileCache};
use crate::error::LoadError;
use crate::limits::EPOCH_TICK;

/// Memory of a pooled instance slot kept mapped between evaluations.
const KEEP_RESIDENT_BYTES: usize = 2 * 1024 * 1024;

/// Settings of a [`PolicyEngine`].
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Directory where compiled modules are cached, keyed by module content, engine settings
    /// and wasmtime version, so that a restart does not compile again. `None` disables it.
    pub cache_dir: Option<PathBuf>,
    /// Pre-allocate instance slots (wasmtime's pooling allocator) instead of mapping fresh
    /// memory for every evaluation. `None` uses on-demand allocation.
    pub pooling: Option<PoolingOptions>,
}

/// Sizing of the pooling allocator.
#[derive(Debug, Clone, Copy)]
pub struct PoolingOptions {
    /// Instances that can exist at once (evaluations in flight); more fail to instantiate.
    pub max_instances: u32,
    /// Largest linear memory of one instance; must be at least the evaluation memory limit.
    pub max_memory_bytes: usize,
}

struct Inner {
    engine: Engine,
    /// The engine's code-generation settings without its instance allocator: what a
    /// short-lived compiling engine is made from.
    compile_config: Config,
    compile_cache: Option<CompileCache>,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// Compiles policy modules and runs them. Cheap to clone.
#[derive(Clone)]
pub struct PolicyEngine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine").finish_non_exhaustive()
    }
}

impl PolicyEngine {
    pub fn new(options: &EngineOptions) -> Result<Self, LoadError> {
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .cranelift_opt_level(OptLevel::Speed)
            // Go ≥ 1.26 emits function references.
            .wasm_function_references(true)
            .wasm_gc(true);
        // How instances are allocated does not change the code: modules compiled with these
        // settings alone are accepted by the serving engine.
        let compile_config = config.clone();
        if let Some(pooling) = options.pooling {
            let mut pool = PoolingAllocationConfig::new();
            pool.total_core_instances(pooling.max_instances)
                .total_memories(pooling.max_instances)
                .total_tables(pooling.max_instances)
                .max_memory_size(pooling.max_memory_bytes)
                // Zero the first pages of a returned slot instead of giving them back to the
                // kernel: `madvise` costs a TLB shootdown on every core per evaluation, and a
                // typical guest touches about 1 MiB. Measured with `cargo xtask bench`
                // (accept-all, 16 connections): 2 MiB serves 11.1k req/s, 1 MiB 8.6k,
                // 4 MiB 11.0k, madvise only 6.6k.
                .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
                .table_keep_resident(64 * 1024);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        // Without a usable directory modules are compiled in memory on every start: slower
        // and heavier, but serving.
        let compile_cache = options.cache_dir.as_ref().and_then(|dir| {
            CompileCache::new(dir.clone())
                .inspect_err(|error| {
                    tracing::warn!(%error, "no compile cache: modules are compiled on every start")
                })
                .ok()
        });
        let engine = Engine::new(&config).map_err(LoadError::Engine)?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.weak();
        let stop = stop_ticker.clone();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker_engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(LoadError::EpochTicker)?;
        Ok(PolicyEngine {
            inner: Arc::new(Inner {
                engine,
                compile_config,
                compile_cache,
                stop_ticker,
            }),
        })
    }

    /// Maps `wasm` compiled from the compile cache when there is one; compiles it (in a
    /// short-lived engine, see [`crate::compile_cache`]) otherwise.
    pub(crate) fn compile(&self, wasm: &[u8]) -> Result<Module, LoadError> {
        let inner = &self.inner;
        match &inner.compile_cache {
            Some(cache) => cache.module(&inner.engine, &inner.compile_config, wasm),
            None => compile_cache::from_compiled(
                &inner.engine,
                &compile_cache::compile_isolated(&inner.compile_config, wasm)?,
            ),
        }
    }
}
