//! Prometheus metrics, with the names and labels upstream exports over OpenTelemetry.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, MetricFamily, MetricType};
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
    latency: HistogramVec,
    /// The same two instruments, pushed over OTLP when telemetry exports metrics.
    otlp: Option<OtlpInstruments>,
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
        registry.register(Box::new(EvaluationCounts::new(latency.clone())?))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(workers.clone()))?;
        registry.register(Box::new(busy.clone()))?;
        registry.register(Box::new(waiting.clone()))?;
        Ok(Metrics {
            registry,
            latency,
            otlp: telemetry::exported_meter("kubewarden").map(|meter| OtlpInstruments {
                evaluations: meter
                    .u64_counter("kubewarden_policy_evaluations_total")
                    .with_description("Policy evaluations")
                    .build(),
                latency: meter
                    .f64_histogram("kubewarden_policy_evaluation_latency_milliseconds")
                    .with_description("Time one policy evaluation took, in milliseconds")
                    .with_unit("ms")
                    .build(),
            }),
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
        self.latency.with_label_values(&values).observe(millis);
        if let Some(otlp) = &self.otlp {
            otlp.record(labels, millis);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec only fails for invalid metric families, which we never create.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

/// Upstream's OpenTelemetry instruments (meter `kubewarden`), with its attributes: the
/// optional `resource_namespace` and `error_code` only when there is one.
#[derive(Debug, Clone)]
struct OtlpInstruments {
    evaluations: opentelemetry::metrics::Counter<u64>,
    latency: opentelemetry::metrics::Histogram<f64>,
}

impl OtlpInstruments {
    fn record(&self, labels: &EvaluationLabels<'_>, millis: f64) {
        use opentelemetry::KeyValue;
        let mut attributes = vec![
            KeyValue::new("policy_name", labels.policy_name.to_string()),
            KeyValue::new("policy_mode", labels.policy_mode.to_string()),
            KeyValue::new("resource_kind", labels.resource_kind.to_string()),
            KeyValue::new("resource_request_operation", labels.operation.to_string()),
            KeyValue::new("accepted", labels.accepted),
            KeyValue::new("mutated", labels.mutated),
            KeyValue::new("request_origin", labels.origin.to_string()),
        ];
        if !labels.namespace.is_empty() {
            attributes.push(KeyValue::new(
                "resource_namespace",
                labels.namespace.to_string(),
            ));
        }
        if let Some(code) = labels.error_code {
            attributes.push(KeyValue::new("error_code", i64::from(code)));
        }
        self.evaluations.add(1, &attributes);
        self.latency.record(millis, &attributes);
    }
}

/// `kubewarden_policy_evaluations_total`, read from the latency histogram's sample counts when
/// scraped: every evaluation is observed once, in one label lookup, instead of a counter and a
/// histogram each looking up the same nine labels on the request path.
#[derive(Debug)]
struct EvaluationCounts {
    latency: HistogramVec,
    desc: Desc,
}

impl EvaluationCounts {
    const NAME: &str = "kubewarden_policy_evaluations_total";
    const HELP: &str = "Policy evaluations";

    fn new(latency: HistogramVec) -> Result<Self, prometheus::Error> {
        let desc = Desc::new(
            Self::NAME.to_string(),
            Self::HELP.to_string(),
            EVALUATION_LABELS.iter().map(|l| l.to_string()).collect(),
            Default::default(),
        )?;
        Ok(EvaluationCounts { latency, desc })
    }
}

impl Collector for EvaluationCounts {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = self.latency.collect();
        for family in &mut families {
            family.set_name(Self::NAME.to_string());
            family.set_help(Self::HELP.to_string());
            family.set_field_type(MetricType::COUNTER);
            for metric in family.mut_metric() {
                let mut counter = Counter::default();
                counter.set_value(metric.get_histogram().get_sample_count() as f64);
                metric.set_histogram(Default::default());
                metric.set_counter(counter);
            }
        }
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluations_are_counted_per_label_set_and_timed() {
        let metrics = Metrics::new().expect("registry");
        let labels = EvaluationLabels {
            policy_name: "p",
            policy_mode: "protect",
            resource_kind: "Pod",
            operation: "CREATE",
            accepted: false,
            origin: "validate",
            namespace: "default",
            error_code: Some(403),
            ..Default::default()
        };
        metrics.record_evaluation(&labels, 0.2);
        metrics.record_evaluation(&labels, 0.3);
        metrics.record_evaluation(
            &EvaluationLabels {
                accepted: true,
                error_code: None,
                ..labels
            },
            0.1,
        );
        let text = metrics.render();
        let series = r#"{accepted="false",error_code="403",mutated="false",policy_mode="protect",policy_name="p",request_origin="validate",resource_kind="Pod",resource_namespace="default",resource_request_operation="CREATE"}"#;
        assert!(
            text.contains("# TYPE kubewarden_policy_evaluations_total counter"),
            "{text}"
        );
        assert!(
            text.contains(&format!("kubewarden_policy_evaluations_total{series} 2\n")),
            "{text}"
        );
        assert!(text.contains(r#"kubewarden_policy_evaluations_total{accepted="true",error_code="",mutated="false""#), "{text}");
        assert!(
            text.contains("# TYPE kubewarden_policy_evaluation_latency_milliseconds histogram"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "kubewarden_policy_evaluation_latency_milliseconds_count{series} 2\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "kubewarden_policy_evaluation_latency_milliseconds_sum{series} 0.5\n"
            )),
            "{text}"
        );
    }
}
