//! Part of `cargo xtask bench`: what OpenTelemetry export costs under load. Two policy-servers
//! with the same policies and flags, one also with `--log-fmt otlp` (a trace per request) and
//! metrics pushed every second, both to a local OpenTelemetry Collector (the tests' minimal
//! distribution, built from its Go modules); wrk on `/validate/accept-all` at 16 connections,
//! alternating between them, medians of the rounds.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench::{LoadResult, median_result, wrk_with_server_cpu};
use crate::local_server::{LocalPolicyServer, free_port};

const ROUNDS: usize = 3;
const PATH: &str = "/validate/accept-all";
const CONNECTIONS: u32 = 16;

/// The collector, stopped when dropped.
struct Collector(Child);

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the collector receiving OTLP/gRPC on `port` and writing what it gets under `dir`.
fn start_collector(dir: &Path, port: u16) -> Result<Collector> {
    let binary = crate::go_tool::OTELCOL.ensure()?;
    let config = dir.join("otelcol.yaml");
    std::fs::write(
        &config,
        format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{port}\nexporters:\n  file:\n    path: {}\nservice:\n  telemetry:\n    metrics:\n      level: none\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [file]\n    metrics:\n      receivers: [otlp]\n      exporters: [file]\n",
            dir.join("otlp.jsonl").display()
        ),
    )?;
    let collector = Collector(
        Command::new(&binary)
            .arg("--config")
            .arg(format!("file:{}", config.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("the OpenTelemetry Collector did not listen within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(collector)
}

/// Export off and on, medians of the alternating rounds.
pub(crate) struct TelemetryCost {
    pub(crate) off: LoadResult,
    pub(crate) on: LoadResult,
}

pub(crate) fn measure(
    binary: &Path,
    dir: &Path,
    policies: &Path,
    seconds: u32,
) -> Result<TelemetryCost> {
    println!(
        "==> OpenTelemetry export off and on: {PATH}, {CONNECTIONS} connections, {ROUNDS} alternating rounds"
    );
    let port = free_port()?;
    let _collector = start_collector(dir, port)?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let metrics_ports = (free_port()?.to_string(), free_port()?.to_string());
    let flags = |metrics_port: &str| -> Vec<String> {
        [
            "--workers",
            "2",
            "--enable-metrics",
            "--metrics-port",
            metrics_port,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let off_flags = flags(&metrics_ports.0);
    let mut on_flags = flags(&metrics_ports.1);
    on_flags.extend(["--log-fmt".to_string(), "otlp".to_string()]);
    // Without an endpoint nothing is pushed: export off.
    let off = LocalPolicyServer::start_with_env(binary, dir, policies, &as_str(&off_flags), &[])?;
    let on = LocalPolicyServer::start_with_env(
        binary,
        dir,
        policies,
        &as_str(&on_flags),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
        ],
    )?;
    let (mut offs, mut ons) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        offs.push(wrk_with_server_cpu(
            dir,
            off.port,
            off.child.id(),
            PATH,
            CONNECTIONS,
            seconds,
        )?);
        ons.push(wrk_with_server_cpu(
            dir,
            on.port,
            on.child.id(),
            PATH,
            CONNECTIONS,
            seconds,
        )?);
    }
    let exported = std::fs::metadata(dir.join("otlp.jsonl")).map_or(0, |m| m.len());
    if exported == 0 {
        bail!("the export-on server sent the collector nothing");
    }
    Ok(TelemetryCost {
        off: median_result(&offs),
        on: median_result(&ons),
    })
}

fn as_str(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

/// The report's lines.
pub(crate) fn summary(cost: &TelemetryCost) -> Result<String> {
    let mut out = String::new();
    writeln!(
        out,
        "- OpenTelemetry export, `{PATH}` at {CONNECTIONS} connections (medians of {ROUNDS} alternating rounds): off {:.0} req/s, p99 {:.0} µs, server CPU {:.1} µs/request; on (a trace per request, metrics every second, to a local collector) {:.0} req/s, p99 {:.0} µs, server CPU {:.1} µs/request: {:+.1} µs of server CPU per request; errors {} / {}",
        cost.off.requests_per_second,
        cost.off.p99_us,
        cost.off.server_cpu_us,
        cost.on.requests_per_second,
        cost.on.p99_us,
        cost.on.server_cpu_us,
        cost.on.server_cpu_us - cost.off.server_cpu_us,
        cost.off.errors,
        cost.on.errors,
    )?;
    Ok(out)
}
