//! The bounded pool evaluations run on: never on the async runtime's threads, at most
//! `workers` at once; further requests wait for a slot (back-pressure) instead of piling up
//! threads.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct EvaluationPool {
    slots: Arc<Semaphore>,
    metrics: Metrics,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("the evaluation pool is shutting down")]
    Closed,
    #[error("the evaluation panicked: {0}")]
    Panicked(String),
}

impl EvaluationPool {
    pub fn new(workers: usize, metrics: Metrics) -> Self {
        metrics.workers.set(workers as i64);
        EvaluationPool {
            slots: Arc::new(Semaphore::new(workers.max(1))),
            metrics,
        }
    }

    /// Runs `job` on a blocking thread once a slot is free.
    pub async fn run<T, F>(&self, job: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.metrics.waiting.inc();
        let permit = self.slots.clone().acquire_owned().await;
        self.metrics.waiting.dec();
        let permit = permit.map_err(|_| PoolError::Closed)?;
        self.metrics.busy.inc();
        let result = tokio::task::spawn_blocking(job).await;
        self.metrics.busy.dec();
        drop(permit);
        result.map_err(|e| PoolError::Panicked(e.to_string()))
    }
}
