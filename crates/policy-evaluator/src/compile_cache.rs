//! Compiled modules kept on disk, one file per module content and engine settings, and mapped
//! back into memory instead of read.
//!
//! Two things make this cheaper in memory than compiling in the serving engine and keeping
//! wasmtime's own (compressed) cache:
//! - A module is compiled by a short-lived engine of its own ([`compile_isolated`]). Cranelift
//!   keeps its compilation contexts, grown to the largest function it compiled, in the engine
//!   for the engine's life; with a 3 MB Go module that was 17 MiB held by a server that never
//!   compiles again.
//! - The serving engine maps the compiled file (`Module::deserialize_file`): its code is
//!   paged in from the file as it runs, and shared with the page cache, instead of a private
//!   decompressed copy per process. A policy loaded and never called costs almost nothing.
//!   Where the filesystem refuses executable mappings (`noexec`), the file is read instead.
//!
//! Entries are written whole and durably (a new temporary file, synced, renamed into place,
//! the directory synced) and the directory keeps the most recently used entries, at most
//! [`MAX_ENTRIES`] and [`MAX_BYTES`].

use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine, Module};

use crate::error::LoadError;

/// Entries kept in the directory; older ones are removed when a new one is written.
pub(crate) const MAX_ENTRIES: usize = 256;
/// Bytes of entries kept (the newest entry is kept whatever its size).
pub(crate) const MAX_BYTES: u64 = 1 << 30;
/// A temporary file this old was left by a writer that died.
const STALE_TEMPORARY: Duration = Duration::from_secs(3600);

const EXTENSION: &str = "cwasm";
const TEMPORARY_EXTENSION: &str = "tmp";
/// Where wasmtime's own cache, which an earlier release used here, kept its entries.
const WASMTIME_CACHE_LEFTOVER: &str = "modules";

/// Compiles `wasm` with an engine made from `config` and dropped right after, with the memory
/// Cranelift keeps for its next compilation. The result loads into any engine with the same
/// code-generation settings ([`from_compiled`]).
pub(crate) fn compile_isolated(config: &Config, wasm: &[u8]) -> Result<Vec<u8>, LoadError> {
    let compiler = Engine::new(config).map_err(LoadError::Engine)?;
    compiler.precompile_module(wasm).map_err(LoadError::Compile)
}

/// Loads what [`compile_isolated`] produced in this process into `engine`.
pub(crate) fn from_compiled(engine: &Engine, compiled: &[u8]) -> Result<Module, LoadError> {
    deserialize(engine, compiled).map_err(LoadError::Compile)
}

/// The directory of compiled modules.
pub(crate) struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// Uses `dir`, creating it readable and writable by this user alone.
    pub(crate) fn new(dir: PathBuf) -> Result<Self, LoadError> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&dir)
            .map_err(|source| LoadError::CompileCacheDirectory {
                dir: dir.clone(),
                source,
            })?;
        let leftover = dir.join(WASMTIME_CACHE_LEFTOVER);
        if leftover.is_dir() {
            let _ = std::fs::remove_dir_all(leftover);
        }
        Ok(CompileCache { dir })
    }

    /// The compiled `wasm` for `engine`: mapped from the directory, or compiled (by an engine
    /// made from `compile_config`) and written there first. An entry the engine refuses
    /// (another wasmtime, a damaged file) is compiled again and replaced; an entry that
    /// cannot be written leaves the module in memory only.
    pub(crate) fn module(
        &self,
        engine: &Engine,
        compile_config: &Config,
        wasm: &[u8],
    ) -> Result<Module, LoadError> {
        let path = self.entry_path(engine, wasm);
        if path.is_file() {
            match open_entry(engine, &path) {
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
        let compiled = compile_isolated(compile_config, wasm)?;
        match self.write(&path, &compiled) {
            Ok(()) => {
                self.prune();
                if let Ok(module) = map(engine, &path) {
                    return Ok(module);
                }
                warn_mapping_refused(&path);
            }
            Err(error) => {
                tracing::warn!(dir = %self.dir.display(), %error, "cannot write the compile cache: the module is kept in memory only");
            }
        }
        from_compiled(engine, &compiled)
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

    /// Writes `compiled` as `path`: into a new temporary file (never one another writer
    /// holds), synced, renamed into place, and the directory synced, so that after a crash an
    /// entry is either whole or absent.
    fn write(&self, path: &Path, compiled: &[u8]) -> std::io::Result<()> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let temporary = self.dir.join(format!(
            ".{}-{nanos}-{}.{TEMPORARY_EXTENSION}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut file = std::fs::File::options()
                .write(true)
                .create_new(true)
                .open(&temporary)?;
            file.write_all(compiled)?;
            file.sync_all()?;
            std::fs::rename(&temporary, path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written
    }

    /// Keeps the most recently used entries, at most [`MAX_ENTRIES`] and [`MAX_BYTES`], and
    /// removes temporary files left by writers that died. A removed entry that a process
    /// still maps stays readable to it until it unmaps it.
    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        let mut kept: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        for path in entries.flatten().map(|entry| entry.path()) {
            let Ok(metadata) = path.metadata() else {
                continue;
            };
            let Ok(modified) = metadata.modified() else {
                continue;
            };
            match path.extension() {
                Some(e) if e == EXTENSION => kept.push((modified, metadata.len(), path)),
                Some(e)
                    if e == TEMPORARY_EXTENSION
                        && now.duration_since(modified).unwrap_or_default() > STALE_TEMPORARY =>
                {
                    let _ = std::fs::remove_file(path);
                }
                _ => {}
            }
        }
        kept.sort_by_key(|(modified, _, _)| std::cmp::Reverse(*modified));
        let mut bytes = 0;
        for (i, (_, size, path)) in kept.into_iter().enumerate() {
            bytes += size;
            if i > 0 && (i >= MAX_ENTRIES || bytes > MAX_BYTES) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Maps an entry; where the filesystem refuses executable mappings of its files (`noexec`),
/// reads it into memory instead.
fn open_entry(engine: &Engine, path: &Path) -> wasmtime::Result<Module> {
    match map(engine, path) {
        Ok(module) => Ok(module),
        Err(map_error) => {
            let compiled = std::fs::read(path)?;
            let module = deserialize(engine, &compiled).map_err(|_| map_error)?;
            warn_mapping_refused(path);
            Ok(module)
        }
    }
}

fn warn_mapping_refused(path: &Path) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(path = %path.display(), "compiled modules cannot be mapped from the compile cache (a noexec filesystem?): they are read into memory");
    }
}

// SAFETY, for both: wasmtime runs the native code of a deserialized module as it is, checking
// only that it was compiled by this wasmtime version with these settings. What is
// deserialized is either what `precompile_module` produced in this process, or an entry of a
// compile cache, written only by `CompileCache::write` (whole, synced, renamed into place)
// with such output. A cache directory is created readable and writable by this user alone;
// it is the policy-server's download directory (an emptyDir in its pod, which also holds the
// modules the server runs) or kwctl's per-user cache. Whoever can write there can run code as
// this process, as with wasmtime's own cache, which it replaces.

fn map(engine: &Engine, path: &Path) -> wasmtime::Result<Module> {
    #[allow(unsafe_code)]
    // SAFETY: see above.
    unsafe {
        Module::deserialize_file(engine, path)
    }
}

fn deserialize(engine: &Engine, compiled: &[u8]) -> wasmtime::Result<Module> {
    #[allow(unsafe_code)]
    // SAFETY: see above.
    unsafe {
        Module::deserialize(engine, compiled)
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
        let cache = CompileCache::new(dir.clone()).expect("cache");
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

    #[test]
    fn pruning_bounds_the_bytes_and_removes_what_dead_writers_left() {
        let dir = std::env::temp_dir().join(format!("kw-prune-bytes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // What wasmtime's own cache left in the directory of an earlier release.
        std::fs::create_dir_all(dir.join(WASMTIME_CACHE_LEFTOVER).join("wasmtime-40"))
            .expect("leftover");
        let cache = CompileCache::new(dir.clone()).expect("cache");
        assert!(!dir.join(WASMTIME_CACHE_LEFTOVER).exists());
        let now = SystemTime::now();
        let file = |name: &str, bytes: u64, age_secs: u64| {
            let file = std::fs::File::create(dir.join(name)).expect("file");
            // Sparse: no disk is used.
            file.set_len(bytes).expect("length");
            file.set_modified(now - Duration::from_secs(age_secs))
                .expect("mtime");
        };
        let half = MAX_BYTES / 2;
        file("newest.cwasm", half, 0);
        file("second.cwasm", half, 60);
        file("third.cwasm", half, 120);
        file(".1-2-3.tmp", 10, 2 * STALE_TEMPORARY.as_secs());
        file(".4-5-6.tmp", 10, 0);
        cache.prune();
        assert!(dir.join("newest.cwasm").exists());
        assert!(dir.join("second.cwasm").exists());
        assert!(!dir.join("third.cwasm").exists());
        assert!(!dir.join(".1-2-3.tmp").exists());
        assert!(
            dir.join(".4-5-6.tmp").exists(),
            "a writer may still be at it"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
