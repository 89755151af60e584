//! What the trace spans of one admission request cost on the request path (the request's span
//! with its fields, the evaluation's child span entered on a worker thread, the verdict
//! recorded), per request, under three subscribers:
//!
//! - `no subscriber`: nothing wants spans, the floor;
//! - `export off`: the policy-server's default subscriber (info filter, JSON log lines to a
//!   sink, which leave the request spans out), what every request pays without
//!   `--log-fmt otlp`;
//! - `logged spans`: the same if the log layer formatted the request spans too (the cost
//!   leaving them out saves);
//! - `export on`: plus the OpenTelemetry layer batching to an OTLP collector that is not
//!   there (localhost:4317), as with `--log-fmt otlp`.
//!
//! `cargo bench -p policy-server --bench spans`.

use std::hint::black_box;

use axum::body::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use policy_evaluator::admission::{DecodedRequest, Document, decode_request};
use policy_evaluator::response::{AdmissionResponse, AdmissionStatus};
use policy_server::spans;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;

fn request() -> DecodedRequest {
    let body = Bytes::from_static(
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"bench","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"default","object":{"metadata":{"name":"p"}}}}"#,
    );
    decode_request(&body, Document::AdmissionReview).expect("decodes")
}

fn one_request(request: &DecodedRequest, response: &AdmissionResponse) {
    let span = spans::request_span("validate", "reject-by-label", request);
    {
        let _evaluation = spans::evaluation_span(&span).entered();
        black_box(&_evaluation);
    }
    spans::record_verdict(&span, response);
}

fn bench(c: &mut Criterion) {
    let request = request();
    let response = AdmissionResponse {
        uid: "bench".into(),
        allowed: false,
        status: Some(AdmissionStatus {
            code: Some(403),
            message: Some("the label forbidden is not allowed".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut group = c.benchmark_group("request spans");
    group.bench_function("no subscriber", |b| {
        b.iter(|| one_request(&request, &response))
    });

    let log_layer = || {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::sink)
            .with_filter(spans::not_request_spans())
    };
    let export_off = tracing_subscriber::registry()
        .with(EnvFilter::new("info"))
        .with(log_layer());
    tracing::subscriber::with_default(export_off, || {
        group.bench_function("export off", |b| {
            b.iter(|| one_request(&request, &response))
        });
    });
    let logged = tracing_subscriber::registry()
        .with(EnvFilter::new("info"))
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::sink),
        );
    tracing::subscriber::with_default(logged, || {
        group.bench_function("logged spans", |b| {
            b.iter(|| one_request(&request, &response))
        });
    });

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let telemetry = {
        let _runtime = runtime.enter();
        telemetry::Telemetry::start(&telemetry::Options {
            service_name: "bench",
            traces: true,
            metrics: false,
        })
        .expect("telemetry")
    };
    let export_on = tracing_subscriber::registry()
        .with(EnvFilter::new("info"))
        .with(log_layer())
        .with(telemetry.layer());
    tracing::subscriber::with_default(export_on, || {
        group.bench_function("export on", |b| b.iter(|| one_request(&request, &response)));
    });
    group.finish();
    drop(runtime);
}

criterion_group!(benches, bench);
criterion_main!(benches);
