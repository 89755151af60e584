//! Instances kept between evaluations. Reusing an initialised instance skips instantiation,
//! the guest's start-up and (for Rego) loading the data document: 6 µs instead of 36 µs for
//! accept-all (see the crate docs). Only instances whose evaluation succeeded come back, and
//! only while they stay small.

use std::sync::{Mutex, PoisonError};

/// Linear memory above which an instance is dropped after its evaluation instead of kept, so
/// one large request does not pin its memory.
pub const MAX_REUSED_MEMORY_BYTES: usize = 32 * 1024 * 1024;

/// An instance that can be kept.
pub(crate) trait Reusable {
    /// Bytes of linear memory it holds.
    fn memory_bytes(&mut self) -> usize;
}

/// The idle instances of one policy, shared by the evaluator's clones.
pub(crate) struct IdleInstances<T> {
    capacity: usize,
    idle: Mutex<Vec<T>>,
}

impl<T: Reusable> IdleInstances<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        IdleInstances {
            capacity,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn take(&self) -> Option<T> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    /// Keeps `instance` for reuse if there is room and it stayed small; drops it otherwise.
    pub(crate) fn put_back(&self, mut instance: T) {
        if instance.memory_bytes() > MAX_REUSED_MEMORY_BYTES {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.capacity {
            idle.push(instance);
        }
    }

    /// Linear memory held by the idle instances.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter_mut()
            .map(Reusable::memory_bytes)
            .sum()
    }
}
