//! The bounded pool evaluations run on: `workers` dedicated threads, never the async
//! runtime's. Requests take a slot first (at most four per worker: one evaluating, the others
//! queued behind it so a worker finishing a job finds the next without going to sleep); the
//! rest wait for a slot (back-pressure) instead of piling up.
//!
//! Putting a thread to sleep and waking it is the largest cost of handing an evaluation over,
//! larger than the evaluation of a simple policy; every choice here saves some of those,
//! each measured with `cargo xtask bench` and interleaved A/B runs (accept-all, 16
//! connections, 2 cores; see the README's benchmark):
//! - dedicated threads instead of tokio's `spawn_blocking`, which sleeps after every job;
//! - a push wakes a thread only when one sleeps (a futex wake is a system call either way);
//! - four slots per worker rather than two;
//! - on Linux the threads are `SCHED_BATCH`: a woken evaluation thread waits for the running
//!   thread (usually the async runtime, in the middle of answering requests) to block or use
//!   its time slice up instead of preempting it, so the runtime hands over several jobs per
//!   switch. Their share of the CPU is unchanged (same nice value).

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use tokio::sync::{Semaphore, oneshot};

use crate::metrics::Metrics;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The jobs waiting for an evaluation thread. A mutex and a condition variable rather than a
/// channel: idle threads sleep at once instead of spinning and yielding first, which on two
/// cores shared with the async runtime took CPU from the requests being answered
/// (measured by interleaving binaries under wrk; see the README's benchmark).
struct JobQueue {
    state: Mutex<QueueState>,
    job_ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    /// Threads waiting for a job: a push wakes one only if there is one, since waking is a
    /// system call even when nobody waits.
    sleeping: usize,
    closed: bool,
}

impl JobQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Jobs run outside the lock and their panics are caught, so a poisoned lock still
        // holds a consistent queue.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, job: Job) -> Result<(), PoolError> {
        let mut state = self.lock();
        if state.closed {
            return Err(PoolError::Closed);
        }
        state.jobs.push_back(job);
        let wake = state.sleeping > 0;
        drop(state);
        if wake {
            self.job_ready.notify_one();
        }
        Ok(())
    }

    /// The next job, or `None` once the pool is closed and drained.
    fn next(&self) -> Option<Job> {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                return Some(job);
            }
            if state.closed {
                return None;
            }
            state.sleeping += 1;
            state = self
                .job_ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.sleeping -= 1;
        }
    }
}

/// Closes the queue when the last pool handle is dropped, so the threads end.
struct QueueHandle(Arc<JobQueue>);

impl Drop for QueueHandle {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.job_ready.notify_all();
    }
}

impl std::fmt::Debug for QueueHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobQueue")
            .field("queued", &self.0.lock().jobs.len())
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct EvaluationPool {
    jobs: Arc<QueueHandle>,
    slots: Arc<Semaphore>,
    metrics: Metrics,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("the evaluation pool is shutting down")]
    Closed,
    #[error("the evaluation panicked: {0}")]
    Panicked(String),
    #[error("cannot start the evaluation threads: {0}")]
    Start(std::io::Error),
}

/// Slots per worker: the job it runs and the ones queued behind it.
const SLOTS_PER_WORKER: usize = 4;

impl EvaluationPool {
    /// Starts `workers` evaluation threads; they end when the last handle is dropped.
    pub fn new(workers: usize, metrics: Metrics) -> Result<Self, PoolError> {
        let workers = workers.max(1);
        metrics.workers.set(workers as i64);
        let queue = Arc::new(JobQueue {
            state: Mutex::new(QueueState::default()),
            job_ready: Condvar::new(),
        });
        let jobs = Arc::new(QueueHandle(queue.clone()));
        for index in 0..workers {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("evaluation-{index}"))
                .spawn(move || {
                    batch_scheduling();
                    while let Some(job) = queue.next() {
                        job();
                    }
                })
                .map_err(PoolError::Start)?;
        }
        Ok(EvaluationPool {
            jobs,
            slots: Arc::new(Semaphore::new(workers * SLOTS_PER_WORKER)),
            metrics,
        })
    }

    /// Runs `job` on an evaluation thread once a slot is free.
    pub async fn run<T, F>(&self, job: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.metrics.waiting.inc();
        let permit = self.slots.clone().acquire_owned().await;
        let Ok(permit) = permit else {
            self.metrics.waiting.dec();
            return Err(PoolError::Closed);
        };
        let (reply, answer) = oneshot::channel();
        let metrics = self.metrics.clone();
        let sent = self.jobs.0.push(Box::new(move || {
            metrics.waiting.dec();
            metrics.busy.inc();
            let result = std::panic::catch_unwind(AssertUnwindSafe(job));
            metrics.busy.dec();
            // The request may have gone (client disconnected); nothing to do then.
            let _ = reply.send(result);
        }));
        if sent.is_err() {
            self.metrics.waiting.dec();
            return Err(PoolError::Closed);
        }
        let result = answer.await;
        drop(permit);
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(panic)) => Err(PoolError::Panicked(panic_message(panic.as_ref()))),
            Err(_) => Err(PoolError::Closed),
        }
    }
}

/// Makes the calling thread `SCHED_BATCH` (see the module's documentation); where that is
/// refused the thread keeps the default policy, which only costs speed.
fn batch_scheduling() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityOsValue,
            ThreadSchedulePolicy, set_thread_priority_and_policy, thread_native_id,
        };
        // Nice value 0, the default: the policy changes, not the share of the CPU.
        if let Err(err) = set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Os(ThreadPriorityOsValue::default()),
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch),
        ) {
            tracing::debug!(error = ?err, "evaluation thread keeps the default scheduling policy");
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_evaluation_threads_and_panics_are_reported() {
        let metrics = Metrics::new().expect("metrics");
        let pool = EvaluationPool::new(2, metrics).expect("pool");
        let name = pool
            .run(|| std::thread::current().name().map(str::to_string))
            .await
            .expect("runs");
        assert!(name.is_some_and(|name| name.starts_with("evaluation-")));
        #[cfg(target_os = "linux")]
        {
            use thread_priority::{NormalThreadSchedulePolicy, ThreadSchedulePolicy};
            let policy = pool
                .run(thread_priority::thread_schedule_policy)
                .await
                .expect("runs")
                .expect("policy");
            assert_eq!(
                policy,
                ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch)
            );
        }
        let err = pool
            .run(|| -> u8 { panic!("guest host bug") })
            .await
            .expect_err("panics are caught");
        assert!(matches!(err, PoolError::Panicked(message) if message == "guest host bug"));
        assert_eq!(pool.run(|| 7).await.expect("still serving"), 7);
    }

    #[tokio::test]
    async fn at_most_four_jobs_per_worker_are_admitted() {
        let metrics = Metrics::new().expect("metrics");
        let pool = EvaluationPool::new(1, metrics).expect("pool");
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(std::sync::Mutex::new(gate));
        let mut running = Vec::new();
        let jobs = SLOTS_PER_WORKER + 1;
        for _ in 0..jobs {
            let pool = pool.clone();
            let gate = gate.clone();
            running.push(tokio::spawn(async move {
                pool.run(move || {
                    let _ = gate.lock().map(|gate| gate.recv());
                })
                .await
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(pool.slots.available_permits(), 0);
        assert_eq!(
            pool.metrics.waiting.get(),
            jobs as i64 - 1,
            "one running, three queued, one waiting for a slot"
        );
        for _ in 0..jobs {
            release.send(()).expect("release");
        }
        for job in running {
            job.await.expect("joins").expect("runs");
        }
        assert_eq!(pool.metrics.waiting.get(), 0);
        assert_eq!(pool.metrics.busy.get(), 0);
    }
}
