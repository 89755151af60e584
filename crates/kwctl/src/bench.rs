//! `kwctl bench`: how long the policy takes to evaluate the request, warm, measured with the
//! evaluator the policy-server uses (instances reused, as it reuses them), reported as
//! criterion reports: `[lower mean upper]` of the mean's 95 % confidence interval, plus the
//! spread and percentiles.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use policy_evaluator::PolicyEvaluator;
use serde_json::Value;

/// How long to measure.
#[derive(Debug, Clone, Copy)]
pub struct BenchOptions {
    pub warm_up: Duration,
    pub measurement: Duration,
}

/// The measured times of one operation, in nanoseconds, sorted.
#[derive(Debug)]
pub struct Samples(Vec<f64>);

impl Samples {
    fn mean(&self) -> f64 {
        self.0.iter().sum::<f64>() / self.0.len().max(1) as f64
    }

    fn stddev(&self) -> f64 {
        let mean = self.mean();
        let n = self.0.len();
        if n < 2 {
            return 0.0;
        }
        (self.0.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let index = ((p / 100.0) * (self.0.len() - 1) as f64).round() as usize;
        self.0[index.min(self.0.len() - 1)]
    }

    /// The report line of operation `name`.
    pub fn report(&self, name: &str) -> String {
        let (mean, stddev) = (self.mean(), self.stddev());
        let half_interval = 1.96 * stddev / (self.0.len().max(1) as f64).sqrt();
        format!(
            "{name:<24}time:   [{} {} {}]\n{:<24}stddev: {}  p50: {}  p90: {}  p99: {}  ({} samples)\n",
            human(mean - half_interval),
            human(mean),
            human(mean + half_interval),
            "",
            human(stddev),
            human(self.percentile(50.0)),
            human(self.percentile(90.0)),
            human(self.percentile(99.0)),
            self.0.len()
        )
    }
}

/// A duration given in nanoseconds, in criterion's units.
fn human(nanos: f64) -> String {
    if nanos >= 1e9 {
        format!("{:.4} s", nanos / 1e9)
    } else if nanos >= 1e6 {
        format!("{:.4} ms", nanos / 1e6)
    } else if nanos >= 1e3 {
        format!("{:.4} µs", nanos / 1e3)
    } else {
        format!("{nanos:.4} ns")
    }
}

/// Runs `operation` for the warm-up time, then as often as fits the measurement time.
fn measure(options: BenchOptions, mut operation: impl FnMut() -> Result<()>) -> Result<Samples> {
    let started = Instant::now();
    while started.elapsed() < options.warm_up {
        operation()?;
    }
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < options.measurement || samples.is_empty() {
        let one = Instant::now();
        operation()?;
        samples.push(one.elapsed().as_nanos() as f64);
    }
    samples.sort_by(f64::total_cmp);
    Ok(Samples(samples))
}

/// `validate_settings` and `validate` of `request`, each measured.
pub fn bench(
    evaluator: &PolicyEvaluator,
    request: &Value,
    raw: bool,
    options: BenchOptions,
) -> Result<String> {
    let settings = measure(options, || {
        evaluator
            .validate_settings()
            .map(|_| ())
            .context("validate_settings failed")
    })?;
    let validate = measure(options, || {
        let answer = if raw {
            evaluator.validate_raw(request)
        } else {
            evaluator.validate(request)
        };
        answer.map(|_| ()).context("validate failed")
    })?;
    Ok(format!(
        "{}{}",
        settings.report("validate_settings"),
        validate.report("validate")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_of_known_samples() {
        let samples = Samples((1..=100).map(f64::from).collect());
        assert_eq!(samples.mean(), 50.5);
        assert_eq!(samples.percentile(50.0), 51.0);
        assert_eq!(samples.percentile(99.0), 99.0);
        assert!((samples.stddev() - 29.011).abs() < 0.001);
        assert_eq!(human(1_500.0), "1.5000 µs");
        assert!(
            samples
                .report("validate")
                .starts_with("validate                time:   [")
        );
    }
}
