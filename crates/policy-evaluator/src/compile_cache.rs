//! Compiled modules kept on disk, one file per module content and engine settings, and mapped
//! back into memory instead of read.
//!
//! Two things make this cheaper in memory than compiling in the serving engine and keeping
//! wasmtime's own (compressed) cache:
//! - A module is compiled by a short-lived engine of its own. Cranelift keeps its compilation
//!   contexts, grown to the largest function it compiled, in the engine for the engine's life;
//!   with a 3 MB Go module that was 17 MiB held by a server that never compiles again.
//! - The serving engine maps the compiled file (`Module::deserialize_file`): its code is
//!   paged in from the file as it runs, and shared with the page cache, instead of a private
//!   decompressed copy per process. A policy loaded and never called costs almost nothing.
//!
//! Entries are written whole (a temporary file renamed into place) and the directory keeps
//! the most recently used [`MAX_ENTRIES`].

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine, Module};

use crate::error::LoadError;

/// Entries kept in the directory; older ones are removed when a new one is written.
pub(crate) const MAX_ENTRIES: usize = 256;

const EXTENSION: &str = "cwasm";

/// The directory of compiled modules, and how to compile one that is missing.
pub(crate) struct CompileCache {
    dir: PathBuf,
    /// The serving engine's configuration: a compiling engine made from it produces code the
    /// serving engine accepts.
    compile_config: Config,
}

impl CompileCache {
    pub(crate) fn new(dir: PathBuf, compile_config: Config) -> Result<Self, LoadError> {
        std::fs::create_dir_all(&dir).map_err(|e| {
            LoadError::Engine(format!("compile cache directory {}: {e}", dir.display()))
        })?;
        Ok(CompileCache {
            dir,
            compile_config,
        })
    }

    /// The compiled `wasm` for `engine`: mapped from the directory, or compiled and written
    /// there first. An entry the engine refuses (another wasmtime, a damaged file) is
    /// compiled again and replaced.
    pub(crate) fn module(&self, engine: &Engine, wasm: &[u8]) -> Result<Module, LoadError> {
        let path = self.entry_path(engine, wasm);
        if path.is_file() {
            match map(engine, &path) {
                Ok(module) => {
                    mark_used(&path);
                    return Ok(module);
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), error = %format!("{error:#}"), "compiled module not usable: compiling again");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let compiled = self.compile(wasm)?;
        match self.write(&path, &compiled) {
            Ok(()) => {
                self.prune();
                map(engine, &path)
                    .map_err(|e| LoadError::Compile(format!("{}: {e:#}", path.display())))
            }
            Err(error) => {
                tracing::warn!(dir = %self.dir.display(), %error, "cannot write the compile cache: the module is kept in memory only");
                #[allow(unsafe_code)]
                // SAFETY: `compiled` is what `precompile_module` of an engine with the serving
                // engine's configuration produced in this process a moment ago.
                let module = unsafe { Module::deserialize(engine, &compiled) };
                module.map_err(|e| LoadError::Compile(format!("{e:#}")))
            }
        }
    }

    /// Compiles `wasm` with an engine that is dropped right after, with the memory Cranelift
    /// keeps for its next compilation.
    fn compile(&self, wasm: &[u8]) -> Result<Vec<u8>, LoadError> {
        let compiler =
            Engine::new(&self.compile_config).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        compiler
            .precompile_module(wasm)
            .map_err(|e| LoadError::Compile(format!("{e:#}")))
    }

    /// `<sha256 of the module>-<hash of the engine's settings and this crate's version>.cwasm`.
    fn entry_path(&self, engine: &Engine, wasm: &[u8]) -> PathBuf {
        // SipHash with fixed keys: the same in every process of this build. Another build may
        // hash differently, which only costs a compilation.
        let mut settings = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut settings);
        // wasmtime checks its own version when mapping an entry; a new wasmtime in the same
        // release of ours is caught there and compiled again.
        env!("CARGO_PKG_VERSION").hash(&mut settings);
        self.dir.join(format!(
            "{:x}-{:016x}.{EXTENSION}",
            Sha256::digest(wasm),
            settings.finish()
        ))
    }

    fn write(&self, path: &Path, compiled: &[u8]) -> std::io::Result<()> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let temporary = self.dir.join(format!(
            ".{}.{}.tmp",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let written =
            std::fs::write(&temporary, compiled).and_then(|()| std::fs::rename(&temporary, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written
    }

    /// Removes all but the [`MAX_ENTRIES`] most recently used entries. A removed entry that a
    /// process still maps stays readable to it until it unmaps it.
    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries: Vec<(SystemTime, PathBuf)> = entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == EXTENSION))
            .filter_map(|path| Some((path.metadata().ok()?.modified().ok()?, path)))
            .collect();
        if entries.len() <= MAX_ENTRIES {
            return;
        }
        entries.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
        for (_, path) in entries.drain(MAX_ENTRIES..) {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn map(engine: &Engine, path: &Path) -> wasmtime::Result<Module> {
    #[allow(unsafe_code)]
    // SAFETY: wasmtime runs the native code of a deserialized module as it is. Entries are
    // only written by `CompileCache::write` (whole, renamed into place) with what
    // `precompile_module` produced, in a directory of this server's own (its download
    // directory, which also holds the modules it runs); wasmtime checks that an entry was
    // compiled for this engine's settings and version before using it.
    unsafe {
        Module::deserialize_file(engine, path)
    }
}

/// Records a use, so pruning keeps the entries in use.
fn mark_used(path: &Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_most_recently_used_entries() {
        let dir = std::env::temp_dir().join(format!("kw-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = CompileCache::new(dir.clone(), Config::new()).expect("cache");
        let now = SystemTime::now();
        let entry = |i: usize| dir.join(format!("{i:04}.{EXTENSION}"));
        for i in 0..MAX_ENTRIES + 2 {
            let file = std::fs::File::create(entry(i)).expect("entry");
            // Entry 0 is the newest, the last two the oldest.
            file.set_modified(now - std::time::Duration::from_secs(i as u64 * 60))
                .expect("mtime");
        }
        std::fs::write(dir.join("unrelated.txt"), "kept").expect("other file");
        // Using an old entry makes it recent.
        mark_used(&entry(MAX_ENTRIES + 1));
        cache.prune();
        assert!(entry(MAX_ENTRIES + 1).exists());
        assert!(!entry(MAX_ENTRIES).exists());
        assert!(!entry(MAX_ENTRIES - 1).exists());
        assert!(entry(0).exists());
        assert!(dir.join("unrelated.txt").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
