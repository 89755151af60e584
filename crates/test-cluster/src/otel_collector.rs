//! A real OpenTelemetry Collector started for a test: the OTLP receiver (gRPC, with TLS and
//! client certificates when asked, and HTTP) writing what it receives with the file exporter,
//! one OTLP JSON document per line, which the test reads.
//!
//! The collector is built from its Go modules by `cargo xtask` (`xtask/assets/otelcol`) and
//! found through `KUBEWARDEN_OTELCOL`. Without it the tests print why and return, unless
//! `KUBEWARDEN_REQUIRE_TEST_SERVERS` is set (as `cargo xtask test` and CI do).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::registry::free_port;

/// Environment variable naming the collector binary.
pub const OTELCOL_ENV: &str = "KUBEWARDEN_OTELCOL";

/// TLS of the gRPC receiver: its certificate and key, and the CA client certificates must
/// chain to (mTLS) when given.
#[derive(Debug, Clone, Copy)]
pub struct ReceiverTls<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub client_ca: Option<&'a Path>,
}

/// A running collector, stopped when dropped.
#[derive(Debug)]
pub struct Collector {
    child: Child,
    pub grpc_port: u16,
    pub http_port: u16,
    /// Where the file exporter writes.
    pub output: PathBuf,
    log: PathBuf,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a collector writing under `dir`; `None` (after saying why) when the collector is not
/// built and the tests may skip.
pub fn start_collector(dir: &Path, tls: Option<ReceiverTls<'_>>) -> Option<Collector> {
    let Some(binary) = std::env::var_os(OTELCOL_ENV)
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
    else {
        if std::env::var_os("KUBEWARDEN_REQUIRE_TEST_SERVERS").is_some() {
            panic!("{OTELCOL_ENV} is unset: run the tests through `cargo xtask test`");
        }
        eprintln!(
            "skipped: no OpenTelemetry Collector ({OTELCOL_ENV} unset; `cargo xtask test` builds one)"
        );
        return None;
    };
    let (grpc_port, http_port) = (free_port(), free_port());
    let output = dir.join(format!("otlp-{grpc_port}.jsonl"));
    let tls_section = tls.map_or(String::new(), |tls| {
        let client_ca = tls.client_ca.map_or(String::new(), |ca| {
            format!("          client_ca_file: {}\n", ca.display())
        });
        format!(
            "        tls:\n          cert_file: {}\n          key_file: {}\n{client_ca}",
            tls.cert.display(),
            tls.key.display()
        )
    });
    let config = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc_port}\n{tls_section}      http:\n        endpoint: 127.0.0.1:{http_port}\nexporters:\n  file:\n    path: {}\n    flush_interval: 100ms\nservice:\n  telemetry:\n    metrics:\n      level: none\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [file]\n    metrics:\n      receivers: [otlp]\n      exporters: [file]\n",
        output.display()
    );
    let config_path = dir.join(format!("otelcol-{grpc_port}.yaml"));
    std::fs::write(&config_path, config).expect("collector config");
    let log = dir.join(format!("otelcol-{grpc_port}.log"));
    let child = Command::new(&binary)
        .arg("--config")
        .arg(format!("file:{}", config_path.display()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("collector log"))
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
    let collector = Collector {
        child,
        grpc_port,
        http_port,
        output,
        log,
    };
    let mut collector = collector;
    let deadline = Instant::now() + Duration::from_secs(30);
    while [grpc_port, http_port]
        .iter()
        .any(|port| std::net::TcpStream::connect(("127.0.0.1", *port)).is_err())
    {
        if let Ok(Some(status)) = collector.child.try_wait() {
            panic!("the collector exited ({status}):\n{}", collector.log());
        }
        assert!(
            Instant::now() < deadline,
            "the collector did not listen within 30 s:\n{}",
            collector.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(collector)
}

impl Collector {
    /// The collector's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every document the file exporter wrote so far.
    pub fn exported(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.output)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Waits until `found` finds something in the exported documents, at most `timeout`.
    pub fn wait_for<T>(&self, timeout: Duration, found: impl Fn(&[Value]) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = found(&self.exported()) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "not exported within {timeout:?}; exported:\n{}\ncollector log:\n{}",
                std::fs::read_to_string(&self.output).unwrap_or_default(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The spans of the exported trace documents, flattened: each with its resource attributes
/// under `"resource"`.
pub fn spans(documents: &[Value]) -> Vec<Value> {
    let mut spans = Vec::new();
    for document in documents {
        for resource_spans in document["resourceSpans"].as_array().into_iter().flatten() {
            for scope in resource_spans["scopeSpans"]
                .as_array()
                .into_iter()
                .flatten()
            {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    let mut span = span.clone();
                    span["resource"] = resource_spans["resource"].clone();
                    spans.push(span);
                }
            }
        }
    }
    spans
}

/// The exported metric data points named `name`, flattened: each with its resource
/// attributes under `"resource"`.
pub fn data_points(documents: &[Value], name: &str) -> Vec<Value> {
    let mut points = Vec::new();
    for document in documents {
        for resource_metrics in document["resourceMetrics"].as_array().into_iter().flatten() {
            for scope in resource_metrics["scopeMetrics"]
                .as_array()
                .into_iter()
                .flatten()
            {
                for metric in scope["metrics"].as_array().into_iter().flatten() {
                    if metric["name"] != name {
                        continue;
                    }
                    let data = ["sum", "histogram", "gauge"]
                        .iter()
                        .find_map(|kind| metric.get(*kind))
                        .cloned()
                        .unwrap_or_default();
                    for point in data["dataPoints"].as_array().into_iter().flatten() {
                        let mut point = point.clone();
                        point["resource"] = resource_metrics["resource"].clone();
                        points.push(point);
                    }
                }
            }
        }
    }
    points
}

/// The value of the attribute `key` of an OTLP JSON object (span, data point, resource), as
/// JSON: `stringValue`, `boolValue`, `intValue` (a string in OTLP JSON), ...
pub fn attribute(object: &Value, key: &str) -> Option<Value> {
    object["attributes"]
        .as_array()?
        .iter()
        .find(|attribute| attribute["key"] == key)
        .and_then(|attribute| attribute["value"].as_object())
        .and_then(|value| value.values().next().cloned())
}
