//! Where a process's resident memory is, from `/proc/<pid>/smaps`: the executable, shared
//! libraries, compiled modules mapped from the compile cache, wasmtime's instance pool,
//! the C allocator's arenas, and the rest (thread stacks, runtime tables).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

/// Resident KiB by where it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MemoryBreakdown {
    /// The policy-server executable's pages (code, read-only data; file-backed).
    pub(crate) executable: u64,
    pub(crate) shared_libraries: u64,
    /// Compiled modules' code and metadata, mapped from the compile cache (file-backed).
    pub(crate) compiled_modules: u64,
    /// wasmtime's instance pool: linear memories with their copy-on-write images, and tables.
    pub(crate) linear_memories: u64,
    /// glibc's main heap and per-thread arenas.
    pub(crate) heap: u64,
    /// Everything else anonymous: thread stacks, wasmtime's tables, the kernel's vdso.
    pub(crate) other: u64,
}

impl MemoryBreakdown {
    pub(crate) fn total(&self) -> u64 {
        self.executable
            + self.shared_libraries
            + self.compiled_modules
            + self.linear_memories
            + self.heap
            + self.other
    }

    /// `| where | MiB |` rows, one per part.
    pub(crate) fn rows(&self) -> Result<String> {
        let mut rows = String::new();
        for (part, kib) in [
            (
                "policy-server executable (file-backed code and data)",
                self.executable,
            ),
            ("shared libraries (libc, libm, …)", self.shared_libraries),
            (
                "compiled modules, mapped from the compile cache (file-backed)",
                self.compiled_modules,
            ),
            (
                "instance pool: linear memories and tables (of idle instances kept for reuse)",
                self.linear_memories,
            ),
            ("C heap (glibc arenas)", self.heap),
            ("other (thread stacks, runtime tables)", self.other),
            ("total", self.total()),
        ] {
            writeln!(rows, "| {part} | {:.1} |", kib as f64 / 1024.0)?;
        }
        Ok(rows)
    }
}

/// One mapping of `/proc/<pid>/smaps`.
#[derive(Debug)]
struct Mapping {
    start: u64,
    end: u64,
    permissions: String,
    path: String,
    rss_kib: u64,
}

const GIB: u64 = 1 << 30;
/// glibc reserves each thread arena as an aligned 64 MiB region.
const ARENA_BYTES: u64 = 64 << 20;

fn parse(smaps: &str) -> Result<Vec<Mapping>> {
    let mut mappings: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else {
            continue;
        };
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        {
            let permissions = fields.next().unwrap_or_default().to_string();
            // offset, device, inode, then the path (which may hold spaces).
            let path = fields.skip(3).collect::<Vec<_>>().join(" ");
            // A file removed while mapped (a pruned compile cache entry) is still that file.
            let path = path.strip_suffix(" (deleted)").unwrap_or(&path).to_string();
            mappings.push(Mapping {
                start,
                end,
                permissions,
                path,
                rss_kib: 0,
            });
        } else if first == "Rss:" {
            let mapping = mappings.last_mut().context("Rss: before any mapping")?;
            mapping.rss_kib = fields.next().unwrap_or("0").parse()?;
        }
    }
    Ok(mappings)
}

/// Sorts the mappings of `smaps` (the text of `/proc/<pid>/smaps`) of a process running
/// `executable` into the parts of [`MemoryBreakdown`].
///
/// Anonymous mappings are told apart by the region they sit in: runs of adjacent mappings
/// that hold a reservation of at least 1 GiB are wasmtime's instance pool; a run that starts
/// on a 64 MiB boundary and spans 64 MiB is a glibc arena.
pub(crate) fn breakdown(smaps: &str, executable: &Path) -> Result<MemoryBreakdown> {
    let mappings = parse(smaps)?;
    let executable = executable.to_string_lossy();
    // Runs of adjacent mappings, as index ranges.
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, mapping) in mappings.iter().enumerate() {
        match runs.last_mut() {
            Some(run) if mappings[run.end - 1].end == mapping.start => run.end = i + 1,
            _ => runs.push(i..i + 1),
        }
    }
    let mut parts = MemoryBreakdown::default();
    for run in runs {
        let span = &mappings[run];
        let instance_pool = span
            .iter()
            .any(|m| m.path.is_empty() && m.end - m.start >= GIB);
        let arena = span[0].start % ARENA_BYTES == 0
            && span[span.len() - 1].end - span[0].start == ARENA_BYTES
            && span[0].path.is_empty();
        for mapping in span {
            let part = if mapping.path == executable {
                &mut parts.executable
            } else if mapping.path.ends_with(".cwasm") && mapping.permissions != "rw-p" {
                &mut parts.compiled_modules
            } else if instance_pool
                || mapping.path.ends_with(".cwasm")
                || mapping.path.contains("wasm-memory-image")
            {
                &mut parts.linear_memories
            } else if arena || mapping.path == "[heap]" {
                &mut parts.heap
            } else if mapping.path.contains(".so") {
                &mut parts.shared_libraries
            } else {
                &mut parts.other
            };
            *part += mapping.rss_kib;
        }
    }
    Ok(parts)
}

/// The [`breakdown`] of a running process.
pub(crate) fn of_process(pid: u32, executable: &Path) -> Result<MemoryBreakdown> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .with_context(|| format!("reading /proc/{pid}/smaps"))?;
    let executable = executable
        .canonicalize()
        .unwrap_or_else(|_| executable.to_path_buf());
    breakdown(&smaps, &executable)
}

/// Fields of `/proc/<pid>/status` in KiB (`VmRSS:`, say); 0 for a field that is missing or a
/// process that is gone.
pub(crate) fn status_kib<const N: usize>(pid: u32, names: [&str; N]) -> [u64; N] {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    names.map(|name| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    })
}

/// A process's resident memory in KiB: anonymous (with shared memory), and file-backed.
pub(crate) fn anonymous_and_file_backed(pid: u32) -> (u64, u64) {
    let [anonymous, shared, file] = status_kib(pid, ["RssAnon:", "RssShmem:", "RssFile:"]);
    (anonymous + shared, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(range: &str, permissions: &str, path: &str, rss_kib: u64) -> String {
        format!(
            "{range} {permissions} 00000000 00:00 0 {path}\nSize: 4 kB\nRss: {rss_kib} kB\nPss: {rss_kib} kB\n"
        )
    }

    #[test]
    fn mappings_are_sorted_by_the_region_they_sit_in() {
        let smaps = [
            mapping("1000-2000", "r-xp", "/bin/policy-server", 100),
            mapping("2000-3000", "r--p", "/bin/policy-server", 10),
            mapping("3000-4000", "rw-p", "[heap]", 7),
            // A glibc arena: 64 MiB aligned, 64 MiB long, mostly reserved.
            mapping("4000000-4021000", "rw-p", "", 30),
            mapping("4021000-8000000", "---p", "", 0),
            // The instance pool: a memory image, its touched pages, a large reservation.
            mapping(
                "10000000-10100000",
                "rw-p",
                "/cache/compile-cache/abc-1.cwasm",
                40,
            ),
            mapping("10100000-10200000", "rw-p", "", 20),
            mapping("10200000-60200000", "---p", "", 0),
            // A compiled module's code and metadata.
            mapping(
                "70000000-70100000",
                "r-xp",
                "/cache/compile-cache/abc-1.cwasm",
                50,
            ),
            mapping(
                "70100000-70200000",
                "r--p",
                "/cache/compile-cache/abc-1.cwasm",
                5,
            ),
            mapping("80000000-80001000", "r-xp", "/usr/lib/libc.so.6", 3),
            // A thread stack with its guard page, not aligned as an arena.
            mapping("90001000-90002000", "---p", "", 0),
            mapping("90002000-90202000", "rw-p", "", 8),
            mapping("a0000000-a0001000", "r-xp", "[vdso]", 1),
        ]
        .concat();
        let parts = breakdown(&smaps, Path::new("/bin/policy-server")).expect("parses");
        assert_eq!(
            parts,
            MemoryBreakdown {
                executable: 110,
                shared_libraries: 3,
                compiled_modules: 55,
                linear_memories: 60,
                heap: 37,
                other: 9,
            }
        );
        assert_eq!(parts.total(), 274);
        assert!(parts.rows().expect("rows").contains("| total | 0.3 |"));
    }
}
