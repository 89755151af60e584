//! `cargo xtask chaos [--seconds N] [--debug]`: faults against the real policy-server while
//! wrk keeps a steady load on a healthy policy. Policies that loop, allocate without bound,
//! trap and overflow their stack are called one after the other for the whole run, and the
//! server's certificate is rotated on disk half-way. Each hostile call must be answered
//! (HTTP 200, allowed=false, code 500, the fault named) within its limit, and the healthy
//! policy must lose no request. Prints a table and writes target/bench/chaos.md.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::bench::{prepare_load_dir, wrk};
use crate::certs::write_localhost_certificates;
use crate::cluster::cache_root;
use crate::local_server::{LocalPolicyServer, build};

/// A hostile policy: its id, its `behaviour` setting, what its answer must say, and the most
/// time an answer may take.
struct Fault {
    id: &'static str,
    behaviour: &'static str,
    expected: &'static str,
    limit: Duration,
}

const FAULTS: &[Fault] = &[
    Fault {
        id: "loops",
        behaviour: "loop",
        expected: "Policy execution interrupted because it exceeded the allowed execution time",
        limit: Duration::from_millis(1_700),
    },
    Fault {
        id: "allocates",
        behaviour: "allocate",
        expected: "exceeded its memory limit",
        limit: Duration::from_secs(3),
    },
    Fault {
        id: "traps",
        behaviour: "trap",
        expected: "the policy trapped",
        limit: Duration::from_millis(500),
    },
    Fault {
        id: "overflows-its-stack",
        behaviour: "recurse",
        expected: "overflowed its stack",
        limit: Duration::from_millis(500),
    },
];

/// What happened to one hostile policy during the run.
#[derive(Debug, Default)]
struct FaultOutcome {
    calls: u32,
    slowest: Duration,
    wrong: Vec<String>,
}

pub fn run(root: &Path, seconds: u32, debug: bool) -> Result<()> {
    if Command::new("wrk").arg("--version").output().is_err() {
        bail!("wrk is missing: apt-get install wrk");
    }
    let binary = build(root, !debug)?;
    let dir = cache_root().join("chaos");
    prepare_load_dir(&dir)?;
    let policies = write_policies(root, &dir)?;
    let server = LocalPolicyServer::start(
        &binary,
        &dir,
        &policies,
        &["--workers", "2", "--log-level", "error"],
    )?;
    let port = server.port;

    println!(
        "==> {seconds} s of load on /validate/accept-all (wrk, 4 connections) while hostile policies are called"
    );
    let load_dir = dir.clone();
    let load = std::thread::spawn(move || wrk(&load_dir, port, "/validate/accept-all", 4, seconds));
    let started = Instant::now();
    let run_for = Duration::from_secs(seconds.into());
    let mut outcomes: Vec<FaultOutcome> = FAULTS.iter().map(|_| FaultOutcome::default()).collect();
    let mut rotated = false;
    while started.elapsed() < run_for {
        for (fault, outcome) in FAULTS.iter().zip(outcomes.iter_mut()) {
            call_fault(&dir, port, fault, outcome)?;
        }
        if !rotated && started.elapsed() >= run_for / 2 {
            // New CA, certificate and key: the server picks them up within its 2 s poll.
            write_localhost_certificates(&dir)?;
            rotated = true;
        }
    }
    let load = load
        .join()
        .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
    let still_serving = call(&dir, port, "/validate/accept-all")?;
    drop(server);

    let mut table = String::from(
        "| fault | calls under load | slowest answer | answers as expected | accept-all requests | accept-all failed |\n|---|---|---|---|---|---|\n",
    );
    let total = (load.requests_per_second * f64::from(seconds)).round();
    let mut failures = Vec::new();
    for (fault, outcome) in FAULTS.iter().zip(&outcomes) {
        writeln!(
            table,
            "| policy that {} | {} | {} ms (limit {} ms) | {} | {total:.0} | {} |",
            fault.id.replace('-', " "),
            outcome.calls,
            outcome.slowest.as_millis(),
            fault.limit.as_millis(),
            if outcome.wrong.is_empty() {
                "yes"
            } else {
                "no"
            },
            load.errors
        )?;
        failures.extend(outcome.wrong.iter().map(|w| format!("{}: {w}", fault.id)));
    }
    writeln!(
        table,
        "| certificate rotated on disk | 1 | - | {} | {total:.0} | {} |",
        if rotated { "yes" } else { "not reached" },
        load.errors
    )?;
    println!("\n{table}");
    let out = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("bench/chaos.md");
    std::fs::create_dir_all(out.parent().context("bench dir")?)?;
    std::fs::write(&out, &table)?;
    if load.errors > 0 {
        failures.push(format!(
            "{} accept-all requests failed under faults",
            load.errors
        ));
    }
    if still_serving["response"]["allowed"] != true {
        failures.push(format!("accept-all after the run answered {still_serving}"));
    }
    if !failures.is_empty() {
        bail!("faults were not contained:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

fn write_policies(root: &Path, dir: &Path) -> Result<PathBuf> {
    let fixtures = root.join("crates/policy-evaluator/tests/fixtures");
    let module = |name: &str| format!("file://{}", fixtures.join(name).display());
    let mut policies = serde_json::Map::new();
    policies.insert(
        "accept-all".into(),
        serde_json::json!({"module": module("accept-all.wasm")}),
    );
    for fault in FAULTS {
        policies.insert(
            fault.id.into(),
            serde_json::json!({"module": module("hostile.wasm"), "timeoutEvalSeconds": 1,
                "settings": {"behaviour": fault.behaviour}}),
        );
    }
    let path = dir.join("policies.yml");
    std::fs::write(&path, Value::Object(policies).to_string())?;
    Ok(path)
}

fn call_fault(dir: &Path, port: u16, fault: &Fault, outcome: &mut FaultOutcome) -> Result<()> {
    let started = Instant::now();
    let answer = call(dir, port, &format!("/validate/{}", fault.id))?;
    let took = started.elapsed();
    outcome.calls += 1;
    outcome.slowest = outcome.slowest.max(took);
    let response = &answer["response"];
    let message = response["status"]["message"].as_str().unwrap_or_default();
    if response["allowed"] != false
        || response["status"]["code"] != 500
        || !message.contains(fault.expected)
    {
        outcome.wrong.push(format!("unexpected answer {answer}"));
    } else if took > fault.limit {
        outcome
            .wrong
            .push(format!("answered after {} ms", took.as_millis()));
    }
    Ok(())
}

/// POSTs the Pod review to `path` (any certificate: it is rotated during the run).
fn call(dir: &Path, port: u16, path: &str) -> Result<Value> {
    let output = Command::new("curl")
        .args([
            "-sk",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
        ])
        .arg(format!("@{}", dir.join("body.json").display()))
        .arg(format!("https://localhost:{port}{path}"))
        .stderr(Stdio::null())
        .output()
        .context("running curl")?;
    Ok(serde_json::from_slice(&output.stdout).unwrap_or(Value::Null))
}
