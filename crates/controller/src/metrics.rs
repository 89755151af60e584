//! Prometheus metrics of the controller itself.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    reconciliations: IntCounterVec,
    reconcile_duration: HistogramVec,
    /// 1 while this replica holds the leader lease.
    pub leader: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciliations = IntCounterVec::new(
            Opts::new(
                "kubewarden_controller_reconciliations_total",
                "Reconciliations by controller and result (success, error)",
            ),
            &["controller", "result"],
        )?;
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "kubewarden_controller_reconcile_duration_seconds",
                "Time spent in one reconciliation",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["controller"],
        )?;
        let leader = IntGauge::new(
            "kubewarden_controller_leader",
            "1 when this replica is the elected leader",
        )?;
        registry.register(Box::new(reconciliations.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        Ok(Metrics {
            registry,
            reconciliations,
            reconcile_duration,
            leader,
        })
    }

    pub fn observe(&self, controller: &str, success: bool, seconds: f64) {
        let result = if success { "success" } else { "error" };
        self.reconciliations
            .with_label_values(&[controller, result])
            .inc();
        self.reconcile_duration
            .with_label_values(&[controller])
            .observe(seconds);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec only fails on metric families prometheus itself rejected at
        // registration.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_reconciliations() {
        let metrics = Metrics::new().expect("metrics");
        metrics.observe("policyserver", true, 0.01);
        metrics.observe("policyserver", false, 0.02);
        let text = metrics.render();
        assert!(text.contains(
            r#"kubewarden_controller_reconciliations_total{controller="policyserver",result="error"} 1"#
        ));
        assert!(text.contains("kubewarden_controller_reconcile_duration_seconds_bucket"));
    }
}
