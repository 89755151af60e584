//! Prometheus metrics, with the names and labels upstream exports over OpenTelemetry.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Labels of the evaluation metrics, in order.
pub const EVALUATION_LABELS: &[&str] = &[
    "policy_name",
    "policy_mode",
    "resource_kind",
    "resource_request_operation",
    "accepted",
    "mutated",
    "request_origin",
    "resource_namespace",
    "error_code",
];

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub evaluations: IntCounterVec,
    pub latency: HistogramVec,
    pub http_requests: IntCounterVec,
    pub workers: IntGauge,
    pub busy: IntGauge,
    pub waiting: IntGauge,
}

/// Label values of one evaluation.
#[derive(Debug, Default)]
pub struct EvaluationLabels<'a> {
    pub policy_name: &'a str,
    pub policy_mode: &'a str,
    pub resource_kind: &'a str,
    pub operation: &'a str,
    pub accepted: bool,
    pub mutated: bool,
    pub origin: &'a str,
    pub namespace: &'a str,
    pub error_code: Option<u16>,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let evaluations = IntCounterVec::new(
            Opts::new("kubewarden_policy_evaluations_total", "Policy evaluations"),
            EVALUATION_LABELS,
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "kubewarden_policy_evaluation_latency_milliseconds",
                "Time one policy evaluation took on its evaluation thread, in milliseconds",
            )
            .buckets(vec![
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0,
                2500.0, 5000.0,
            ]),
            EVALUATION_LABELS,
        )?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "kubewarden_policy_server_http_requests_total",
                "HTTP requests by endpoint and status",
            ),
            &["endpoint", "status"],
        )?;
        let workers = IntGauge::new(
            "kubewarden_policy_server_workers",
            "Evaluations that can run at once",
        )?;
        let busy = IntGauge::new(
            "kubewarden_policy_server_workers_busy",
            "Evaluations running",
        )?;
        let waiting = IntGauge::new(
            "kubewarden_policy_server_evaluations_waiting",
            "Evaluations waiting for a worker",
        )?;
        registry.register(Box::new(evaluations.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(workers.clone()))?;
        registry.register(Box::new(busy.clone()))?;
        registry.register(Box::new(waiting.clone()))?;
        Ok(Metrics {
            registry,
            evaluations,
            latency,
            http_requests,
            workers,
            busy,
            waiting,
        })
    }

    pub fn record_evaluation(&self, labels: &EvaluationLabels<'_>, millis: f64) {
        let error_code = labels.error_code.map(|c| c.to_string()).unwrap_or_default();
        let values = [
            labels.policy_name,
            labels.policy_mode,
            labels.resource_kind,
            labels.operation,
            if labels.accepted { "true" } else { "false" },
            if labels.mutated { "true" } else { "false" },
            labels.origin,
            labels.namespace,
            error_code.as_str(),
        ];
        self.evaluations.with_label_values(&values).inc();
        self.latency.with_label_values(&values).observe(millis);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec only fails for invalid metric families, which we never create.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8_lossy(&buffer).into_owned()
    }
}
