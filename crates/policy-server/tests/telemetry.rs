//! OpenTelemetry export of the real policy-server binary to a real OpenTelemetry Collector
//! (`test_cluster::otel_collector`, built from its Go modules): the span tree of an admission
//! request and upstream's two metrics with their attributes, over gRPC with TLS and client
//! certificates (upstream's `OTEL_EXPORTER_OTLP_*CERTIFICATE` variables) and over
//! HTTP/protobuf; and a collector that is down costs no request.
//!
//! Without the collector these tests print why and return, unless
//! `KUBEWARDEN_REQUIRE_TEST_SERVERS` is set (as `cargo xtask test` and CI do).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use test_cluster::otel_collector::{
    Collector, ReceiverTls, attribute, data_points, spans, start_collector,
};

const EXPORT_TIMEOUT: Duration = Duration::from_secs(30);

/// The server flags and environment of an export to `endpoint`, metrics every 300 ms and spans
/// batched for 200 ms (so the test does not wait for the defaults, 60 s and 5 s).
fn export_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_string()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "300".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200".into()),
    ]
}

fn start_exporting(dir: &std::path::Path, env: &[(&str, String)]) -> Server {
    let metrics_port = free_port().to_string();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    start_with_env(
        dir,
        &policies_yml(dir),
        None,
        &[
            "--log-fmt",
            "otlp",
            "--enable-metrics",
            "--metrics-port",
            &metrics_port,
        ],
        None,
        &env,
    )
}

/// The `validation` span of the request to `policy` and its `policy_evaluation` child.
fn request_spans(collector: &Collector, policy: &str) -> (Value, Value) {
    collector.wait_for(EXPORT_TIMEOUT, |documents| {
        let spans = spans(documents);
        let request = spans.iter().find(|span| {
            span["name"] == "validation" && attribute(span, "policy_id") == Some(json!(policy))
        })?;
        let child = spans.iter().find(|span| {
            span["name"] == "policy_evaluation"
                && span["parentSpanId"] == request["spanId"]
                && span["traceId"] == request["traceId"]
        })?;
        Some((request.clone(), child.clone()))
    })
}

/// The exported evaluation count of `policy`, once one is exported.
fn evaluations(collector: &Collector, policy: &str) -> Value {
    collector.wait_for(EXPORT_TIMEOUT, |documents| {
        data_points(documents, "kubewarden_policy_evaluations_total")
            .into_iter()
            .find(|point| attribute(point, "policy_name") == Some(json!(policy)))
    })
}

#[test]
fn spans_and_metrics_reach_a_collector_over_grpc_with_client_certificates() {
    let (dir, pki) = setup("otel-grpc");
    pki.issue(
        &["localhost"],
        &dir.join("collector.crt"),
        &dir.join("collector.key"),
    );
    pki.issue(
        &["policy-server"],
        &dir.join("client.crt"),
        &dir.join("client.key"),
    );
    let ca = dir.join("ca.crt");
    let Some(collector) = start_collector(
        &dir,
        Some(ReceiverTls {
            cert: &dir.join("collector.crt"),
            key: &dir.join("collector.key"),
            client_ca: Some(&ca),
        }),
    ) else {
        return;
    };
    let path = |name: &str| dir.join(name).display().to_string();
    let mut env = export_env(&format!("https://localhost:{}", collector.grpc_port));
    env.extend([
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", path("ca.crt")),
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", path("client.crt")),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", path("client.key")),
    ]);
    let server = start_exporting(&dir, &env);
    let answer = verdict(&server, &ca, "reject-label", json!({"forbidden": "x"}));
    assert_eq!(answer["allowed"], false, "{answer}");

    let (request, evaluation) = request_spans(&collector, "reject-label");
    for (key, expected) in [
        ("request_uid", json!("1299d386-525b-4032-98ae-1949f69f9cfc")),
        ("kind", json!("Pod")),
        ("operation", json!("CREATE")),
        ("namespace", json!("default")),
        ("allowed", json!(false)),
        ("mutated", json!(false)),
    ] {
        assert_eq!(attribute(&request, key), Some(expected), "{key}: {request}");
    }
    assert!(
        attribute(&request, "response_message")
            .is_some_and(|m| m.as_str().is_some_and(|m| m.contains("forbidden"))),
        "{request}"
    );
    assert_eq!(
        attribute(&request["resource"], "service.name"),
        Some(json!("kubewarden-policy-server"))
    );
    assert!(
        evaluation["startTimeUnixNano"].as_str() >= request["startTimeUnixNano"].as_str(),
        "the evaluation runs within the request: {request} {evaluation}"
    );

    let point = evaluations(&collector, "reject-label");
    for (key, expected) in [
        ("policy_mode", json!("protect")),
        ("resource_kind", json!("Pod")),
        ("resource_request_operation", json!("CREATE")),
        ("accepted", json!(false)),
        ("mutated", json!(false)),
        ("request_origin", json!("validate")),
        ("resource_namespace", json!("default")),
    ] {
        assert_eq!(attribute(&point, key), Some(expected), "{key}: {point}");
    }
    assert!(attribute(&point, "error_code").is_some(), "{point}");
    assert_eq!(point["asInt"], "1", "{point}");
    collector.wait_for(EXPORT_TIMEOUT, |documents| {
        data_points(
            documents,
            "kubewarden_policy_evaluation_latency_milliseconds",
        )
        .into_iter()
        .find(|point| point["count"] == "1")
    });
}

#[test]
fn http_protobuf_export_reaches_the_collector() {
    let (dir, _pki) = setup("otel-http");
    let Some(collector) = start_collector(&dir, None) else {
        return;
    };
    let mut env = export_env(&format!("http://127.0.0.1:{}", collector.http_port));
    env.push(("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()));
    env.push(("OTEL_SERVICE_NAME", "edge-policy-server".into()));
    let server = start_exporting(&dir, &env);
    let answer = verdict(
        &server,
        &dir.join("ca.crt"),
        "monitored",
        json!({"forbidden": "x"}),
    );
    assert_eq!(answer["allowed"], true, "monitor mode: {answer}");
    let (request, _) = request_spans(&collector, "monitored");
    assert_eq!(
        attribute(&request["resource"], "service.name"),
        Some(json!("edge-policy-server")),
        "OTEL_SERVICE_NAME names the service"
    );
    let point = evaluations(&collector, "monitored");
    assert_eq!(
        attribute(&point, "policy_mode"),
        Some(json!("monitor")),
        "{point}"
    );
}

#[test]
fn a_collector_that_is_down_costs_no_request() {
    let (dir, _pki) = setup("otel-down");
    // Nothing listens there.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let server = start_exporting(&dir, &export_env(&endpoint));
    let ca = dir.join("ca.crt");
    let slowest = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut slowest = Duration::ZERO;
                    for _ in 0..40 {
                        let started = Instant::now();
                        let answer = verdict(&server, &ca, "reject-label", json!({"x": "1"}));
                        assert_eq!(answer["allowed"], true, "{answer}");
                        slowest = slowest.max(started.elapsed());
                    }
                    slowest
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|client| client.join().expect("client"))
            .max()
            .unwrap_or_default()
    });
    // Not a speed target: an export waiting for the collector would hold a request for the
    // export timeout (10 s); every one of the 160 requests took far less.
    assert!(
        slowest < Duration::from_secs(3),
        "a request waited for the collector: {slowest:?}"
    );
}
