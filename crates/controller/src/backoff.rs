//! Retry delays. Per object: each consecutive failure of the same object doubles its delay, a
//! success resets it, so one broken object neither spins nor slows the others. Per controller:
//! [`watch_backoff`], the pause of a controller's watches after a watch error.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::runtime::watcher::ExponentialBackoff;

/// The pause of a controller's watches after a watch error: 100 ms doubling up to 1 s, back to
/// 100 ms once an event arrives (kube-runtime's exponential backoff, other bounds, no jitter).
///
/// kube-runtime merges a controller's watches into one stream and pauses *all* of them on an
/// error of any, with one shared backoff (800 ms doubling to 30 s by default). After an
/// apiserver restart every watch errs in turn (refused connections, then `410 Gone` for its
/// old resource version before it lists again), so the pauses add up per watch: with the
/// default a 6 s outage left changes unreconciled for over a minute, capped at 4 s still 37 s
/// (a dozen watches per controller); capped at 1 s, 8 s (`cluster_controller` test). While
/// the apiserver is away this costs at most one retry per controller a second.
pub fn watch_backoff() -> ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(1))
        .with_factor(2.0)
        .without_max_times()
        .into()
}

#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure of `key` and returns how long to wait before retrying it.
    pub fn failed(&self, key: &str) -> Duration {
        let Ok(mut failures) = self.failures.lock() else {
            return self.max;
        };
        let count = failures.entry(key.to_string()).or_insert(0);
        let delay = self
            .base
            .saturating_mul(2u32.saturating_pow(*count))
            .min(self.max);
        *count = count.saturating_add(1);
        delay
    }

    pub fn succeeded(&self, key: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(300))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_until_the_cap_and_resets_on_success() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let delays: Vec<_> = (0..5).map(|_| backoff.failed("a").as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        assert_eq!(backoff.failed("b").as_secs(), 1);
        backoff.succeeded("a");
        assert_eq!(backoff.failed("a").as_secs(), 1);
    }

    #[test]
    fn watches_pause_from_100_ms_doubling_to_1_s_and_start_over_on_reset() {
        use kube::runtime::utils::Backoff as _;
        let millis = |backoff: &mut ExponentialBackoff| -> Vec<u128> {
            backoff.take(7).map(|d| d.as_millis()).collect()
        };
        let mut watch = watch_backoff();
        assert_eq!(millis(&mut watch), [100, 200, 400, 800, 1000, 1000, 1000]);
        watch.reset();
        assert_eq!(millis(&mut watch), [100, 200, 400, 800, 1000, 1000, 1000]);
    }
}
