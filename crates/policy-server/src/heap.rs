//! Gives the memory that loading policies used for a moment back to the kernel.
//!
//! Compiling a module with Cranelift allocates several times the module's size for a moment
//! (a 3 MB Go module: about 65 MiB), on the loader's threads, and glibc keeps what is freed:
//! - Its trim threshold is dynamic: freeing one large block raises it to twice that block's
//!   size, up to 64 MiB, so after the first compilation the free tops of the threads' arenas
//!   are never given back. [`fix_trim_threshold`] pins it at its default instead.
//! - What stays allocated after a load (the modules, the served policies) sits above the
//!   freed blocks, so an arena cannot shrink from its top; [`release_freed_memory`] returns
//!   the free pages inside the arenas after every load and reload.
//!
//! Measured on the Go fixture, cold start (`cargo xtask bench`, memory section): resident
//! memory after the load went from 103 MiB to 37 MiB with both, and the compile cache.

/// glibc's default trim threshold, which it abandons after the first large free.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD_BYTES: libc::c_int = 128 * 1024;

/// Pins the trim threshold; call once, at start-up. Pinning it also keeps glibc's mmap
/// threshold at its default (128 KiB): a block that large is mapped and unmapped on its own,
/// as it is in every process before its first large free; the benchmarks saw no difference.
/// An operator's own setting (`MALLOC_TRIM_THRESHOLD_`, or `glibc.malloc.trim_threshold` in
/// `GLIBC_TUNABLES`) wins.
pub(crate) fn fix_trim_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some()
        || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("malloc.trim_threshold"))
    {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt takes two integers and changes glibc's allocator settings under its
    // own lock; no pointer is involved.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
    }
}

/// Releases free heap pages after a load or reload; a no-op where the allocator is not glibc's.
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim takes no pointers; it walks glibc's arenas under their own locks,
    // so it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
