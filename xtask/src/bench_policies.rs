//! `cargo xtask bench policies` (also a part of `cargo xtask bench`): the policy-server on
//! policies shaped like the ones users run, each alone in a server, with a Deployment's Pod
//! as the request: throughput and latency under load, evaluation time, start-up and resident
//! memory; with `--baseline BINARY`, the same runs against another policy-server build in
//! alternating pairs. Then memory with many modules: each kind's cost per additional idle
//! module, and 20 distinct modules, with and without standard-Go ones (cold and with the
//! compile cache), with the breakdown of where the resident memory is.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::bench::{
    LoadResult, PolicyEntry, distinct_variants, evaluation_latency, median, median_result,
    policies_file, prepare_load_dir, wrk, wrk_with_server_cpu,
};
use crate::local_server::{LocalPolicyServer, free_port, post_insecure};
use crate::memory::MemoryBreakdown;
use crate::paths::cache_root;

/// A policy as served in one benchmark: a fixture of `crates/policy-evaluator/tests/fixtures`
/// with settings.
struct Fixture {
    id: &'static str,
    module: &'static str,
    /// YAML of the `settings:` entry.
    settings: &'static str,
    what: &'static str,
}

const SAFE_LABELS: Fixture = Fixture {
    id: "safe-labels",
    module: "safe-labels",
    settings: r#"{denied_labels: [debug], mandatory_labels: [owner, cost-center], constrained_labels: {cost-center: "^cc-[0-9]{4}$", environment: "^(production|staging)$"}}"#,
    what: "Rust, serde and regex (1.0 MB)",
};
const POD_SECURITY: Fixture = Fixture {
    id: "gatekeeper-pod-security",
    module: "gatekeeper-pod-security",
    settings: "{repos: [registry.example.com/]}",
    what: "Rego, Gatekeeper, five rules (0.1 MB)",
};
const GO_LOGGING: Fixture = Fixture {
    id: "go-logging-debug",
    module: "go-wapc-pod-privileged",
    settings: "{}",
    what: "the same, a debug line through the host per request (filtered at the server's info level; the SDKs' default)",
};
const GO_LOGGING_INFO: Fixture = Fixture {
    id: "go-logging-info",
    module: "go-wapc-pod-privileged",
    settings: "{log_level: info}",
    what: "the same, logging at info: every request writes a log line",
};
const GO_QUIET: Fixture = Fixture {
    id: "go-no-logging",
    module: "go-wapc-pod-privileged",
    settings: "{log_level: off}",
    what: "standard Go waPC (3.2 MB), logging off",
};
const ACCEPT_ALL: Fixture = Fixture {
    id: "accept-all",
    module: "accept-all",
    settings: "{}",
    what: "Rust, parses the request into a serde_json::Value and accepts (73 kB)",
};
const REJECT_BY_LABEL: Fixture = Fixture {
    id: "reject-by-label",
    module: "reject-by-label",
    settings: "{denied_labels: [forbidden]}",
    what: "Rust, serde_json::Value (80 kB)",
};
const OPA_REJECT_BY_LABEL: Fixture = Fixture {
    id: "opa-reject-by-label",
    module: "opa-reject-by-label",
    settings: "{denied_labels: [forbidden]}",
    what: "Rego, OPA mode (0.1 MB)",
};

const JAVASCRIPT: Fixture = Fixture {
    id: "js-quickjs",
    module: "js-quickjs",
    settings: "{allowedRegistries: [registry.example.com/]}",
    what: "JavaScript on QuickJS, a WASI command (1.0 MB): a fresh instance per request, as for every WASI policy",
};

/// Measured under load, each in a server of its own.
const UNDER_LOAD: [&Fixture; 7] = [
    &ACCEPT_ALL,
    &SAFE_LABELS,
    &POD_SECURITY,
    &JAVASCRIPT,
    &GO_QUIET,
    &GO_LOGGING,
    &GO_LOGGING_INFO,
];

/// The mix of the 20-module server (four distinct modules of each).
const KINDS: [&Fixture; 5] = [
    &SAFE_LABELS,
    &POD_SECURITY,
    &GO_QUIET,
    &REJECT_BY_LABEL,
    &OPA_REJECT_BY_LABEL,
];

/// The kinds whose idle modules are counted.
const IDLE_KINDS: [&Fixture; 6] = [
    &SAFE_LABELS,
    &POD_SECURITY,
    &GO_QUIET,
    &REJECT_BY_LABEL,
    &OPA_REJECT_BY_LABEL,
    &JAVASCRIPT,
];

/// The same without the standard-Go kind (whose modules are 3 MB each).
const KINDS_WITHOUT_GO: [&Fixture; 4] = [
    &SAFE_LABELS,
    &POD_SECURITY,
    &REJECT_BY_LABEL,
    &OPA_REJECT_BY_LABEL,
];

/// Runs of each fixture (alternating with the baseline when there is one).
const RUNS: usize = 3;
const CONNECTIONS: u32 = 16;
/// Distinct modules of one kind when counting an idle module's cost.
const IDLE_MODULES: usize = 5;
/// Time for a started server to settle before its memory is read.
const SETTLE: Duration = Duration::from_millis(300);

/// One fixture's numbers.
struct FixtureNumbers {
    fixture: &'static Fixture,
    load: LoadResult,
    /// The same runs against the baseline binary, when given.
    baseline: Option<LoadResult>,
    evaluation_us: f64,
    startup_cold: Duration,
    startup_warm: Duration,
    rss_cold_kib: u64,
    rss_warm_kib: u64,
    rss_after_load_kib: u64,
}

fn fixtures_dir(root: &Path) -> PathBuf {
    root.join("crates/policy-evaluator/tests/fixtures")
}

/// A server's flags: two workers and the metrics endpoint.
fn flags(metrics_port: &str) -> [&str; 5] {
    [
        "--workers",
        "2",
        "--enable-metrics",
        "--metrics-port",
        metrics_port,
    ]
}

/// At the policy-server's default log level, so a guest's info lines are written.
const ENV: [(&str, &str); 1] = [("KUBEWARDEN_LOG_LEVEL", "info")];

fn start(
    binary: &Path,
    dir: &Path,
    policies: &Path,
    metrics_port: u16,
) -> Result<LocalPolicyServer> {
    let port = metrics_port.to_string();
    let server = LocalPolicyServer::start_with_env(binary, dir, policies, &flags(&port), &ENV)?;
    std::thread::sleep(SETTLE);
    Ok(server)
}

fn measure_fixture(
    root: &Path,
    binary: &Path,
    baseline: Option<(&Path, &Path)>,
    dir: &Path,
    fixture: &'static Fixture,
    seconds: u32,
) -> Result<FixtureNumbers> {
    let module = fixtures_dir(root).join(format!("{}.wasm", fixture.module));
    let policies = policies_file(
        dir,
        fixture.id,
        &[(fixture.id.to_string(), module, Some(fixture.settings))],
    )?;
    let metrics_port = free_port()?;
    let _ = std::fs::remove_dir_all(dir.join("compile-cache"));
    let cold = start(binary, dir, &policies, metrics_port)?;
    let (startup_cold, rss_cold_kib) = (cold.startup, cold.memory_kib().1);
    drop(cold);
    let server = start(binary, dir, &policies, metrics_port)?;
    let rss_warm_kib = server.memory_kib().1;
    let baseline_server = baseline
        .map(|(binary, baseline_dir)| start(binary, baseline_dir, &policies, free_port()?))
        .transpose()?;

    let path = format!("/validate/{}", fixture.id);
    // A baseline that answers differently (it cannot run the module, say) is not compared.
    let body = std::fs::read_to_string(dir.join("body.json"))?;
    let verdict = |port: u16| -> Result<String> {
        let answer = post_insecure(port, &path, &body)?;
        Ok(format!(
            "allowed={} code={}",
            answer["response"]["allowed"], answer["response"]["status"]["code"]
        ))
    };
    let ours = verdict(server.port)?;
    let baseline_server = match baseline_server {
        Some(other) => {
            let theirs = verdict(other.port)?;
            if theirs == ours {
                Some(other)
            } else {
                println!(
                    "  {}: the baseline answers {theirs}, this build {ours}: not compared",
                    fixture.id
                );
                None
            }
        }
        None => None,
    };
    let (mut runs, mut baseline_runs) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        runs.push(wrk_with_server_cpu(
            dir,
            server.port,
            server.child.id(),
            &path,
            CONNECTIONS,
            seconds,
        )?);
        if let Some(other) = &baseline_server {
            baseline_runs.push(wrk(dir, other.port, &path, CONNECTIONS, seconds)?);
        }
    }
    // Evaluation time alone, at one connection: under load the worker threads share the two
    // cores with the load generator and the metric would count their waits.
    let before = evaluation_latency(metrics_port, fixture.id)?;
    wrk(dir, server.port, &path, 1, seconds)?;
    let after = evaluation_latency(metrics_port, fixture.id)?;
    let numbers = FixtureNumbers {
        fixture,
        load: median_result(&runs),
        baseline: baseline_server.map(|_| median_result(&baseline_runs)),
        evaluation_us: 1000.0 * (after.0 - before.0) / (after.1 - before.1),
        startup_cold,
        startup_warm: server.startup,
        rss_cold_kib,
        rss_warm_kib,
        rss_after_load_kib: server.memory_kib().1,
    };
    let result = &numbers.load;
    println!(
        "  {:<24} {:>7.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs  evaluation {:>7.1} µs  RSS {:.1} MiB{}",
        fixture.id,
        result.requests_per_second,
        result.p50_us,
        result.p99_us,
        numbers.evaluation_us,
        mib(numbers.rss_after_load_kib),
        numbers
            .baseline
            .as_ref()
            .map(|b| format!(
                "  (baseline {:.0} req/s, p99 {:.0} µs)",
                b.requests_per_second, b.p99_us
            ))
            .unwrap_or_default()
    );
    Ok(numbers)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Each kind's resident memory per additional idle module (loaded, settings validated,
/// never called), with the compile cache warm, in KiB.
fn idle_module_cost(
    root: &Path,
    binary: &Path,
    dir: &Path,
) -> Result<Vec<(&'static Fixture, f64)>> {
    let mut costs = Vec::new();
    for kind in IDLE_KINDS {
        let variants = distinct_variants(
            dir,
            &fixtures_dir(root).join(format!("{}.wasm", kind.module)),
            IDLE_MODULES,
        )?;
        let entries: Vec<PolicyEntry<'_>> = variants
            .into_iter()
            .enumerate()
            .map(|(i, path)| (format!("{}-{i}", kind.id), path, Some(kind.settings)))
            .collect();
        let one = policies_file(dir, "idle-one", &entries[..1])?;
        let all = policies_file(dir, "idle-all", &entries)?;
        // Compile them all once: the cost measured is the loaded module, not a compilation.
        drop(start(binary, dir, &all, free_port()?)?);
        let rss_one = start(binary, dir, &one, free_port()?)?.memory_kib().1;
        let rss_all = start(binary, dir, &all, free_port()?)?.memory_kib().1;
        let cost = (rss_all as f64 - rss_one as f64) / (IDLE_MODULES - 1) as f64;
        println!(
            "  {:<24} {:>6.2} MiB per additional idle module",
            kind.id,
            cost / 1024.0
        );
        costs.push((kind, cost));
    }
    Ok(costs)
}

/// A 20-module server: start-up and memory cold and warm, and after one request to each
/// policy, with where that memory is.
struct TwentyModules {
    kinds: &'static [&'static Fixture],
    startup_cold: Duration,
    startup_warm: Duration,
    rss_cold_kib: u64,
    rss_warm_kib: u64,
    rss_called_kib: u64,
    /// Of `rss_called_kib`: anonymous, and file-backed (page cache the kernel can reclaim).
    anonymous_kib: u64,
    file_backed_kib: u64,
    breakdown: MemoryBreakdown,
}

/// 20 distinct modules, as many of each of `kinds`.
fn twenty_modules(
    root: &Path,
    binary: &Path,
    dir: &Path,
    body: &str,
    kinds: &'static [&'static Fixture],
) -> Result<TwentyModules> {
    let mut entries = Vec::new();
    for kind in kinds {
        let variants = distinct_variants(
            dir,
            &fixtures_dir(root).join(format!("{}.wasm", kind.module)),
            20 / kinds.len(),
        )?;
        for (i, path) in variants.into_iter().enumerate() {
            entries.push((format!("{}-{i}", kind.id), path, Some(kind.settings)));
        }
    }
    let policies = policies_file(dir, "mix-of-twenty", &entries)?;
    let _ = std::fs::remove_dir_all(dir.join("compile-cache"));
    let cold = start(binary, dir, &policies, free_port()?)?;
    let (startup_cold, rss_cold_kib) = (cold.startup, cold.memory_kib().1);
    drop(cold);
    let server = start(binary, dir, &policies, free_port()?)?;
    let rss_warm_kib = server.memory_kib().1;
    for (id, _, _) in &entries {
        let answer = post_insecure(server.port, &format!("/validate/{id}"), body)?;
        answer["response"]["allowed"]
            .as_bool()
            .with_context(|| format!("{id} did not answer: {answer}"))?;
    }
    std::thread::sleep(SETTLE);
    let (anonymous_kib, file_backed_kib) =
        crate::memory::anonymous_and_file_backed(server.child.id());
    Ok(TwentyModules {
        kinds,
        anonymous_kib,
        file_backed_kib,
        startup_cold,
        startup_warm: server.startup,
        rss_cold_kib,
        rss_warm_kib,
        rss_called_kib: server.memory_kib().1,
        breakdown: crate::memory::of_process(server.child.id(), binary)?,
    })
}

/// Runs every measurement and returns the report's section.
pub(crate) fn measure(
    root: &Path,
    binary: &Path,
    baseline: Option<&Path>,
    seconds: u32,
) -> Result<String> {
    let dir = cache_root().join("bench-policies");
    prepare_load_dir(&dir)?;
    let body = std::fs::read_to_string(fixtures_dir(root).join("requests/deployment-pod.json"))
        .context("reading the Deployment Pod review")?;
    std::fs::write(dir.join("body.json"), &body)?;
    let baseline_dir = cache_root().join("bench-policies-baseline");
    if baseline.is_some() {
        prepare_load_dir(&baseline_dir)?;
    }
    println!(
        "==> real-world-like policies, one per server: {RUNS} runs of {seconds} s at {CONNECTIONS} connections{}",
        if baseline.is_some() {
            ", alternating with the baseline"
        } else {
            ""
        }
    );
    let mut fixtures = Vec::new();
    for fixture in UNDER_LOAD {
        fixtures.push(measure_fixture(
            root,
            binary,
            baseline.map(|b| (b, baseline_dir.as_path())),
            &dir,
            fixture,
            seconds,
        )?);
    }
    println!("==> resident memory per additional idle module, compile cache warm");
    let idle = idle_module_cost(root, binary, &dir)?;
    let mut twenty = Vec::new();
    for kinds in [&KINDS[..], &KINDS_WITHOUT_GO[..]] {
        println!(
            "==> 20 distinct modules of {}, 2 workers",
            kinds.iter().map(|k| k.id).collect::<Vec<_>>().join(", ")
        );
        twenty.push(twenty_modules(root, binary, &dir, &body, kinds)?);
    }
    report(&fixtures, &idle, &twenty)
}

fn report(
    fixtures: &[FixtureNumbers],
    idle: &[(&'static Fixture, f64)],
    twenty: &[TwentyModules],
) -> Result<String> {
    let mut out = String::from(
        "Real-world-like policies, each alone in a policy-server with 2 workers, a Deployment's Pod (6 kB) as the request, 16 connections (medians of the runs):\n\n| policy | what | req/s | p50 µs | p99 µs | evaluation µs (alone, 1 connection) | server CPU µs/request | start-up cold / cached s | RSS after load, cold / cached MiB | RSS after the runs MiB | errors |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for n in fixtures {
        let r = &n.load;
        writeln!(
            out,
            "| `{}` | {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} | {:.2} / {:.2} | {:.1} / {:.1} | {:.1} | {} |",
            n.fixture.id,
            n.fixture.what,
            r.requests_per_second,
            r.p50_us,
            r.p99_us,
            n.evaluation_us,
            r.server_cpu_us,
            n.startup_cold.as_secs_f64(),
            n.startup_warm.as_secs_f64(),
            mib(n.rss_cold_kib),
            mib(n.rss_warm_kib),
            mib(n.rss_after_load_kib),
            r.errors
        )?;
    }
    let evaluation = |id: &str| {
        fixtures
            .iter()
            .find(|n| n.fixture.id == id)
            .map_or(f64::NAN, |n| n.evaluation_us)
    };
    writeln!(
        out,
        "\n- logging through the host call: per-evaluation time of the Go policy with a debug line per request is {:.2}× the same policy without logging ({:.1} µs against {:.1} µs); writing the line at info: {:.2}×",
        evaluation(GO_LOGGING.id) / evaluation(GO_QUIET.id),
        evaluation(GO_LOGGING.id),
        evaluation(GO_QUIET.id),
        evaluation(GO_LOGGING_INFO.id) / evaluation(GO_QUIET.id),
    )?;
    if fixtures.iter().any(|n| n.baseline.is_some()) {
        out.push_str("\nAgainst the baseline binary, in alternating runs (this build / baseline):\n\n| policy | req/s | p50 µs | p99 µs |\n|---|---|---|---|\n");
        for n in fixtures {
            if let Some(b) = &n.baseline {
                writeln!(
                    out,
                    "| `{}` | {:.0} / {:.0} ({:+.0} %) | {:.0} / {:.0} | {:.0} / {:.0} |",
                    n.fixture.id,
                    n.load.requests_per_second,
                    b.requests_per_second,
                    100.0 * (n.load.requests_per_second / b.requests_per_second - 1.0),
                    n.load.p50_us,
                    b.p50_us,
                    n.load.p99_us,
                    b.p99_us
                )?;
            }
        }
    }
    out.push_str("\nResident memory per additional idle module (loaded, settings validated, never called; compile cache warm):\n\n| kind | MiB |\n|---|---|\n");
    for (kind, kib) in idle {
        writeln!(
            out,
            "| `{}` ({}) | {:.2} |",
            kind.id,
            kind.what,
            kib / 1024.0
        )?;
    }
    writeln!(
        out,
        "\nMedian idle module of these kinds: {:.2} MiB.",
        median(&idle.iter().map(|(_, kib)| kib / 1024.0).collect::<Vec<_>>())
    )?;
    for server in twenty {
        writeln!(
            out,
            "\n20 distinct modules ({} each of {}), 2 workers: start-up {:.2} s with an empty compile cache, {:.2} s with it; resident {:.1} MiB after a cold start, {:.1} MiB after a cached one, {:.1} MiB after one request to each policy ({:.1} MiB anonymous, {:.1} MiB file-backed: page cache the kernel reclaims under pressure). Where that memory is:\n\n| part | MiB |\n|---|---|",
            20 / server.kinds.len(),
            server
                .kinds
                .iter()
                .map(|k| format!("`{}`", k.id))
                .collect::<Vec<_>>()
                .join(", "),
            server.startup_cold.as_secs_f64(),
            server.startup_warm.as_secs_f64(),
            mib(server.rss_cold_kib),
            mib(server.rss_warm_kib),
            mib(server.rss_called_kib),
            mib(server.anonymous_kib),
            mib(server.file_backed_kib),
        )?;
        out.push_str(&server.breakdown.rows()?);
    }
    Ok(out)
}

/// `cargo xtask bench policies`.
pub fn run(root: &Path, seconds: u32, baseline: Option<&Path>) -> Result<()> {
    crate::bench::require_wrk()?;
    let binary = crate::local_server::build(true)?;
    let report = measure(root, &binary, baseline, seconds)?;
    println!("\n{report}");
    let out = crate::cargo::output_dir("bench")?.join("policies.md");
    std::fs::write(&out, report)?;
    println!("written to {}", out.display());
    Ok(())
}
