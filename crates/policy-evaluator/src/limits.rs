//! Limits every evaluation runs under.

use std::time::Duration;

use wasmtime::ResourceLimiter;

/// How often the engine's epoch advances; deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(100);

/// Ticks to allow for `timeout`: rounded up, plus one for the tick already under way.
pub(crate) fn deadline_ticks(timeout: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos();
    (timeout.as_nanos().div_ceil(tick) as u64).saturating_add(1)
}

/// Memory a policy instance may use unless told otherwise.
pub const DEFAULT_MEMORY_LIMIT_BYTES: usize = 256 * 1024 * 1024;
/// Evaluation time a policy gets unless told otherwise (upstream `--policy-timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Time and memory one evaluation may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvaluationLimits {
    /// Deadline of one evaluation (instantiation included); `None` disables it.
    pub timeout: Option<Duration>,
    /// Largest linear memory the instance may grow to.
    pub memory_bytes: usize,
}

impl Default for EvaluationLimits {
    fn default() -> Self {
        EvaluationLimits {
            timeout: Some(DEFAULT_TIMEOUT),
            memory_bytes: DEFAULT_MEMORY_LIMIT_BYTES,
        }
    }
}

/// Refuses memory growth past the limit and remembers that it did, so that the resulting trap
/// can be reported as a memory limit rather than a generic failure.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    limit_bytes: usize,
    pub(crate) exceeded: bool,
}

impl MemoryLimiter {
    pub(crate) fn new(limit_bytes: usize) -> Self {
        MemoryLimiter {
            limit_bytes,
            exceeded: false,
        }
    }
}

/// Table entries an instance may have; far above what real policies use.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit_bytes {
            self.exceeded = true;
            // An error, not `Ok(false)`: guests rarely handle a failed grow, and a trap here
            // names the cause instead of an abort somewhere inside the allocator.
            return Err(wasmtime::Error::msg("memory limit exceeded"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
