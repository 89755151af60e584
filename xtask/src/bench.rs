//! `cargo xtask bench`: the policy-server under load from a real load generator (wrk), over
//! HTTPS with keep-alive, against its own no-op endpoint as a baseline; at one connection also
//! against a minimal HTTPS responder (the floor of wrk, loopback and TLS), which gives the
//! server's own overhead per request; optionally (`--sweep`) the no-op and accept-all at
//! connection counts from 2 to 32; plus cold start with 20 distinct policies, without and
//! with the compile cache, a policy edit restarting against reloading in place
//! (`bench_reload`), and real-world-like policies and memory with many modules
//! (`bench_policies`). Prints a table and writes it to `target/bench/policy-server.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use api_types::metadata::{Metadata, annotate};

use crate::certs::write_localhost_certificates;
use crate::demo::pod_review;
use crate::local_server::{LocalPolicyServer, build, free_port};
use crate::paths::cache_root;
use crate::tls_floor::TlsFloor;

/// One wrk run's results.
#[derive(Debug, Clone)]
pub(crate) struct LoadResult {
    pub(crate) endpoint: String,
    pub(crate) connections: u32,
    pub(crate) requests: f64,
    pub(crate) requests_per_second: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) errors: u64,
    /// CPU time the server used per request (user and system), when measured.
    pub(crate) server_cpu_us: f64,
}

pub(crate) const WRK_SCRIPT: &str = r#"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BENCH_BODY"), "r")
wrk.body = f:read("*a")
f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d %d\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"#;

pub(crate) fn wrk(
    dir: &Path,
    port: u16,
    path: &str,
    connections: u32,
    seconds: u32,
) -> Result<LoadResult> {
    let threads = connections.clamp(1, 2);
    let output = Command::new("wrk")
        .args([
            "-t",
            &threads.to_string(),
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
        ])
        .arg("-s")
        .arg(dir.join("bench.lua"))
        .arg(format!("https://localhost:{port}{path}"))
        .env("BENCH_BODY", dir.join("body.json"))
        .output()
        .context("running wrk; install it: apt-get install wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("BENCH "))
        .with_context(|| {
            format!(
                "wrk printed no result:\n{text}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    let numbers: Vec<f64> = line
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let [requests, duration_us, errors, p50, p99, p999] = numbers[..] else {
        bail!("unexpected wrk result line: {line}");
    };
    Ok(LoadResult {
        endpoint: path.to_string(),
        connections,
        requests,
        requests_per_second: requests / (duration_us / 1e6),
        p50_us: p50,
        p99_us: p99,
        p999_us: p999,
        errors: errors as u64,
        server_cpu_us: f64::NAN,
    })
}

/// Writes `count` distinct variants of a module (its metadata annotated with the variant's
/// number, so each has its own digest and is compiled and loaded as a module of its own) to
/// `dir`, and returns their paths.
pub(crate) fn distinct_variants(dir: &Path, fixture: &Path, count: usize) -> Result<Vec<PathBuf>> {
    let wasm = std::fs::read(fixture).with_context(|| format!("reading {}", fixture.display()))?;
    let mut metadata = Metadata::from_module(&wasm)?.context("fixture has metadata")?;
    let stem = fixture
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    (0..count)
        .map(|i| {
            metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert("bench.variant".into(), i.to_string());
            let path = dir.join(format!("variant-{stem}-{i}.wasm"));
            std::fs::write(&path, annotate(&wasm, &metadata)?)?;
            Ok(path)
        })
        .collect()
}

/// A policy of a policies.yml written by [`policies_file`]: id, module, and the YAML of its
/// settings (none: no `settings:` key).
pub(crate) type PolicyEntry<'a> = (String, PathBuf, Option<&'a str>);

/// Writes `dir/<name>.yml` serving `entries`.
pub(crate) fn policies_file(
    dir: &Path,
    name: &str,
    entries: &[PolicyEntry<'_>],
) -> Result<PathBuf> {
    let mut yaml = String::new();
    for (id, module, settings) in entries {
        writeln!(yaml, "{id}:\n  module: file://{}", module.display())?;
        if let Some(settings) = settings {
            writeln!(yaml, "  settings: {settings}")?;
        }
    }
    let path = dir.join(format!("{name}.yml"));
    std::fs::write(&path, yaml)?;
    Ok(path)
}

/// Empties `dir` and writes what a wrk run against a local policy-server needs: TLS files for
/// localhost, the wrk script and a Pod AdmissionReview body.
pub(crate) fn prepare_load_dir(dir: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    write_localhost_certificates(dir)?;
    std::fs::write(dir.join("bench.lua"), WRK_SCRIPT)?;
    std::fs::write(
        dir.join("body.json"),
        pod_review("bench", r#"{"app":"web"}"#),
    )?;
    Ok(())
}

/// CPU time (user and system) a process has used so far, in microseconds.
fn cpu_us(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is the first, utime the
    // 12th, stime the 13th, in clock ticks of 1/100 s (USER_HZ on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("unexpected /proc stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields.get(i).context("short /proc stat")?.parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) * 10_000.0)
}

/// Sum (milliseconds) and count of the evaluation latency histogram for `policy`, from the
/// server's Prometheus endpoint.
pub(crate) fn evaluation_latency(metrics_port: u16, policy: &str) -> Result<(f64, f64)> {
    let output = Command::new("curl")
        .args(["-sS", &format!("http://127.0.0.1:{metrics_port}/metrics")])
        .output()
        .context("running curl")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let label = format!("policy_name=\"{policy}\"");
    let total = |metric: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(metric) && l.contains(&label))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    Ok((
        total("kubewarden_policy_evaluation_latency_milliseconds_sum{"),
        total("kubewarden_policy_evaluation_latency_milliseconds_count{"),
    ))
}

/// A wrk run with the CPU time the server (process `pid`) used per request during it.
pub(crate) fn wrk_with_server_cpu(
    dir: &Path,
    port: u16,
    pid: u32,
    path: &str,
    connections: u32,
    seconds: u32,
) -> Result<LoadResult> {
    let cpu_before = cpu_us(pid)?;
    let mut result = wrk(dir, port, path, connections, seconds)?;
    result.server_cpu_us = (cpu_us(pid)? - cpu_before) / result.requests;
    Ok(result)
}

/// Connection counts of `--sweep`, and the alternating pairs run at each.
const SWEEP_CONNECTIONS: [u32; 5] = [2, 4, 8, 16, 32];
const SWEEP_PAIRS: usize = 3;

/// Medians of the pairs at one connection count of the sweep.
struct SweepPoint {
    noop: LoadResult,
    accept_all: LoadResult,
    ratio: f64,
}

/// [`alternating_pairs`] at each of [`SWEEP_CONNECTIONS`]:
/// where the hand-off to an evaluation thread costs most depends on how busy the cores are
/// (at low load each request wakes sleeping threads; at saturation the cores' time is
/// shared), so one connection count does not tell it.
fn connection_sweep(dir: &Path, port: u16, pid: u32, seconds: u32) -> Result<Vec<SweepPoint>> {
    println!(
        "==> sweep: {SWEEP_PAIRS} alternating pairs of /noop and /validate/accept-all at {SWEEP_CONNECTIONS:?} connections, {seconds} s each"
    );
    let mut points = Vec::new();
    for connections in SWEEP_CONNECTIONS {
        let pairs = alternating_pairs(dir, port, pid, connections, SWEEP_PAIRS, seconds)?;
        let ratio = median(&pairs.iter().map(Pair::ratio).collect::<Vec<_>>());
        let (noop, accept_all): (Vec<_>, Vec<_>) = pairs
            .into_iter()
            .map(|pair| (pair.noop, pair.accept_all))
            .unzip();
        let point = SweepPoint {
            noop: median_result(&noop),
            accept_all: median_result(&accept_all),
            ratio,
        };
        println!(
            "  c={:<3} no-op {:>7.0} req/s, accept-all {:>7.0} req/s: {:>3.0} %",
            connections,
            point.noop.requests_per_second,
            point.accept_all.requests_per_second,
            point.ratio
        );
        points.push(point);
    }
    Ok(points)
}

/// Each field's median over `runs` of one endpoint.
pub(crate) fn median_result(runs: &[LoadResult]) -> LoadResult {
    let of = |field: fn(&LoadResult) -> f64| median(&runs.iter().map(field).collect::<Vec<_>>());
    LoadResult {
        endpoint: runs.first().map(|r| r.endpoint.clone()).unwrap_or_default(),
        connections: runs.first().map_or(0, |r| r.connections),
        requests: of(|r| r.requests),
        requests_per_second: of(|r| r.requests_per_second),
        p50_us: of(|r| r.p50_us),
        p99_us: of(|r| r.p99_us),
        p999_us: of(|r| r.p999_us),
        errors: runs.iter().map(|r| r.errors).sum(),
        server_cpu_us: of(|r| r.server_cpu_us),
    }
}

fn sweep_table(points: &[SweepPoint]) -> Result<String> {
    let mut table = format!(
        "Connection sweep (medians of {SWEEP_PAIRS} alternating pairs):\n\n| connections | `/noop` req/s | accept-all req/s | accept-all % of no-op | `/noop` p50 µs | accept-all p50 µs | server CPU µs/request, no-op | accept-all | errors |\n|---|---|---|---|---|---|---|---|---|\n"
    );
    for p in points {
        writeln!(
            table,
            "| {} | {:.0} | {:.0} | {:.0} % | {:.0} | {:.0} | {:.1} | {:.1} | {} |",
            p.noop.connections,
            p.noop.requests_per_second,
            p.accept_all.requests_per_second,
            p.ratio,
            p.noop.p50_us,
            p.accept_all.p50_us,
            p.noop.server_cpu_us,
            p.accept_all.server_cpu_us,
            p.noop.errors + p.accept_all.errors
        )?;
    }
    Ok(table)
}

/// Pairs of no-op and accept-all runs behind the throughput ratio.
const RATIO_PAIRS: usize = 5;

/// One run of `/noop` and, right after it, one of `/validate/accept-all`.
struct Pair {
    noop: LoadResult,
    accept_all: LoadResult,
}

impl Pair {
    /// Accept-all's throughput as a percentage of the no-op's.
    fn ratio(&self) -> f64 {
        100.0 * self.accept_all.requests_per_second / self.noop.requests_per_second
    }
}

/// `pairs` alternating runs of `/noop` and `/validate/accept-all` at `connections`, with the
/// server's (process `pid`) CPU time per request: on shared cores the machine's speed drifts
/// by tens of percent within a minute, and a pair run back to back sees nearly the same
/// machine.
fn alternating_pairs(
    dir: &Path,
    port: u16,
    pid: u32,
    connections: u32,
    pairs: usize,
    seconds: u32,
) -> Result<Vec<Pair>> {
    (0..pairs)
        .map(|_| {
            Ok(Pair {
                noop: wrk_with_server_cpu(dir, port, pid, "/noop", connections, seconds)?,
                accept_all: wrk_with_server_cpu(
                    dir,
                    port,
                    pid,
                    "/validate/accept-all",
                    connections,
                    seconds,
                )?,
            })
        })
        .collect()
}

/// `/validate/accept-all` throughput as a percentage of `/noop` at 16 connections, in
/// [`alternating_pairs`].
fn throughput_ratios(
    dir: &Path,
    port: u16,
    pid: u32,
    pairs: usize,
    seconds: u32,
) -> Result<Vec<f64>> {
    println!(
        "==> {pairs} alternating pairs of /noop and /validate/accept-all, c=16, {seconds} s each"
    );
    let pairs = alternating_pairs(dir, port, pid, 16, pairs, seconds)?;
    Ok(pairs.iter().map(Pair::ratio).collect())
}

/// Rounds of the one-connection comparison.
const LATENCY_ROUNDS: usize = 5;

/// Median p50 latencies at one connection, in µs, and the mean evaluation time of accept-all
/// on its thread over those runs.
struct OneConnection {
    floor_us: f64,
    noop_us: f64,
    accept_all_us: f64,
    evaluation_us: f64,
}

/// The TLS floor, `/noop` and `/validate/accept-all` at one connection, in alternating rounds
/// (one sample of each per round, so each round sees nearly the same machine).
fn one_connection(
    dir: &Path,
    floor_port: u16,
    server_port: u16,
    metrics_port: u16,
    seconds: u32,
) -> Result<OneConnection> {
    println!(
        "==> {LATENCY_ROUNDS} alternating rounds of the TLS floor, /noop and /validate/accept-all, c=1, {seconds} s each"
    );
    let (mut floor, mut noop, mut accept_all) = (Vec::new(), Vec::new(), Vec::new());
    let before = evaluation_latency(metrics_port, "accept-all")?;
    for _ in 0..LATENCY_ROUNDS {
        floor.push(wrk(dir, floor_port, "/", 1, seconds)?.p50_us);
        noop.push(wrk(dir, server_port, "/noop", 1, seconds)?.p50_us);
        accept_all.push(wrk(dir, server_port, "/validate/accept-all", 1, seconds)?.p50_us);
    }
    let after = evaluation_latency(metrics_port, "accept-all")?;
    Ok(OneConnection {
        floor_us: median(&floor),
        noop_us: median(&noop),
        accept_all_us: median(&accept_all),
        evaluation_us: 1000.0 * (after.0 - before.0) / (after.1 - before.1),
    })
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

pub(crate) fn require_wrk() -> Result<()> {
    if Command::new("wrk").arg("--version").output().is_err() {
        bail!("wrk is missing: apt-get install wrk");
    }
    Ok(())
}

pub fn run(root: &Path, seconds: u32, sweep: bool, baseline: Option<&Path>) -> Result<()> {
    require_wrk()?;
    let binary = build(true)?;
    let dir = cache_root().join("bench");
    prepare_load_dir(&dir)?;
    let fixtures = root.join("crates/policy-evaluator/tests/fixtures");
    let policies = dir.join("policies.yml");
    std::fs::write(
        &policies,
        format!(
            "accept-all:\n  module: file://{f}/accept-all.wasm\nreject-by-label:\n  module: file://{f}/reject-by-label.wasm\n  settings: {{denied_labels: [forbidden]}}\nopa-reject-by-label:\n  module: file://{f}/opa-reject-by-label.wasm\n  settings: {{denied_labels: [forbidden]}}\n",
            f = fixtures.display()
        ),
    )?;

    let metrics_port = free_port()?;
    let server = LocalPolicyServer::start(
        &binary,
        &dir,
        &policies,
        &[
            "--enable-noop-endpoint",
            "--workers",
            "2",
            "--enable-metrics",
            "--metrics-port",
            &metrics_port.to_string(),
        ],
    )?;
    let pid = server.child.id();
    println!("==> load: wrk, HTTPS keep-alive, {seconds} s per run");
    let mut results = Vec::new();
    for connections in [1, 16] {
        for path in [
            "/noop",
            "/validate/accept-all",
            "/validate/reject-by-label",
            "/validate/opa-reject-by-label",
        ] {
            let result = wrk_with_server_cpu(&dir, server.port, pid, path, connections, seconds)?;
            println!(
                "  {:<28} c={:<3} {:>8.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs  p99.9 {:>6.0} µs  server CPU {:>4.0} µs/request  errors {}",
                result.endpoint,
                result.connections,
                result.requests_per_second,
                result.p50_us,
                result.p99_us,
                result.p999_us,
                result.server_cpu_us,
                result.errors
            );
            results.push(result);
        }
    }
    let ratios = throughput_ratios(&dir, server.port, pid, RATIO_PAIRS, seconds)?;
    let sweep = if sweep {
        connection_sweep(&dir, server.port, pid, seconds)?
    } else {
        Vec::new()
    };
    let floor = TlsFloor::start(&dir)?;
    let latency = one_connection(&dir, floor.port, server.port, metrics_port, seconds)?;
    let (peak_kib, rss_kib) = server.memory_kib();
    drop(server);
    let telemetry = crate::bench_telemetry::measure(&binary, &dir, &policies, seconds)?;

    let variants = distinct_variants(&dir, &fixtures.join("accept-all.wasm"), 20)?;
    let entries: Vec<PolicyEntry<'_>> = variants
        .iter()
        .enumerate()
        .map(|(i, path)| (format!("p{i}"), path.clone(), None))
        .collect();
    let twenty = policies_file(&dir, "twenty", &entries)?;
    let _ = std::fs::remove_dir_all(dir.join("compile-cache"));
    let cold = LocalPolicyServer::start(&binary, &dir, &twenty, &[])?.startup;
    let warm = LocalPolicyServer::start(&binary, &dir, &twenty, &[])?.startup;
    println!("==> a policy edit with 20 policies: restart against in-place reload");
    let variants: Vec<String> = variants.iter().map(|p| p.display().to_string()).collect();
    let reload = crate::bench_reload::measure(&binary, &dir, &fixtures, &variants)?;
    let policies_section = crate::bench_policies::measure(root, &binary, baseline, seconds)?;

    let find = |path: &str, c: u32| {
        results
            .iter()
            .find(|r| r.endpoint == path && r.connections == c)
    };
    let mut table = String::from(
        "| endpoint | connections | req/s | p50 µs | p99 µs | p99.9 µs | server CPU µs/request | errors |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in &results {
        writeln!(
            table,
            "| `{}` | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
            r.endpoint,
            r.connections,
            r.requests_per_second,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            r.server_cpu_us,
            r.errors
        )?;
    }
    let mut summary = String::new();
    if let (Some(noop), Some(accept)) = (find("/noop", 16), find("/validate/accept-all", 16)) {
        writeln!(
            summary,
            "- `/validate/accept-all` throughput at 16 connections: {:.0} % of the no-op baseline in the runs above; median of {} alternating pairs: {:.0} % (each: {})",
            100.0 * accept.requests_per_second / noop.requests_per_second,
            ratios.len(),
            median(&ratios),
            ratios
                .iter()
                .map(|r| format!("{r:.0} %"))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    let overhead = latency.accept_all_us - latency.evaluation_us - latency.floor_us;
    writeln!(
        summary,
        "- at one connection, p50 end-to-end (median of {LATENCY_ROUNDS} alternating rounds): {:.0} µs for a minimal HTTPS responder (the floor: wrk, the loopback and TLS, no server machinery), {:.0} µs for `/noop`, {:.0} µs for `/validate/accept-all`, whose evaluation took {:.1} µs on its thread (mean, from the latency metric). Server overhead per request (end-to-end minus evaluation minus the floor): {overhead:.0} µs, of which {:.0} µs HTTP handling and parsing (`/noop` minus the floor; the floor's blocking reads wake no faster than the server's event loop, so this can come out at or below zero) and {:.0} µs the hand-off to an evaluation thread and back with shaping and metrics",
        latency.floor_us,
        latency.noop_us,
        latency.accept_all_us,
        latency.evaluation_us,
        latency.noop_us - latency.floor_us,
        latency.accept_all_us - latency.noop_us - latency.evaluation_us,
    )?;
    writeln!(
        summary,
        "- memory after the runs: {} MiB resident, {} MiB peak",
        rss_kib / 1024,
        peak_kib / 1024
    )?;
    writeln!(
        summary,
        "- start-up with 20 distinct policies: {:.2} s with an empty compile cache, {:.2} s with it",
        cold.as_secs_f64(),
        warm.as_secs_f64()
    )?;
    summary.push_str(&crate::bench_reload::summary(&reload));
    summary.push_str(&crate::bench_telemetry::summary(&telemetry)?);
    let report = if sweep.is_empty() {
        format!("{table}\n{summary}\n{policies_section}")
    } else {
        format!(
            "{table}\n{summary}\n{}\n{policies_section}",
            sweep_table(&sweep)?
        )
    };
    println!("\n{report}");
    let out = crate::cargo::output_dir("bench")?.join("policy-server.md");
    std::fs::write(&out, report)?;
    println!("written to {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(requests_per_second: f64, p50_us: f64, errors: u64) -> LoadResult {
        LoadResult {
            endpoint: "/noop".into(),
            connections: 4,
            requests: requests_per_second * 3.0,
            requests_per_second,
            p50_us,
            p99_us: p50_us * 10.0,
            p999_us: p50_us * 100.0,
            errors,
            server_cpu_us: 1e6 / requests_per_second,
        }
    }

    #[test]
    fn sweep_points_take_each_fields_median_and_all_errors() {
        let median_run = median_result(&[
            run_with(30_000.0, 90.0, 0),
            run_with(10_000.0, 120.0, 2),
            run_with(20_000.0, 60.0, 1),
        ]);
        assert_eq!(median_run.endpoint, "/noop");
        assert_eq!(median_run.connections, 4);
        assert_eq!(median_run.requests_per_second, 20_000.0);
        assert_eq!(median_run.p50_us, 90.0);
        assert_eq!(median_run.server_cpu_us, 50.0);
        assert_eq!(median_run.errors, 3);
        assert!(median(&[]).is_nan());
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
