//! `cargo xtask chaos [--seconds N] [--debug]`: faults against the real policy-server while
//! wrk keeps a steady load on a healthy policy. Policies that loop, allocate without bound,
//! trap and overflow their stack, and one whose module download broke off mid-way, are called
//! one after the other for the whole run, and the server's certificate is rotated on disk
//! half-way. Each faulty call must be answered (HTTP 200, allowed=false, code 500, the fault
//! named) within its limit, and the healthy policy must lose no request. At the end the server
//! gets SIGTERM with requests in flight, which must all be answered before it exits. Prints a
//! table and writes target/bench/chaos.md.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::bench::{prepare_load_dir, wrk};
use crate::certs::write_localhost_certificates;
use crate::local_server::{LocalPolicyServer, post_insecure};
use crate::paths::cache_root;

/// A hostile policy: its id, its `behaviour` setting, what its answer must say, and the most
/// time an answer may take.
struct Fault {
    id: &'static str,
    /// How the table names it.
    label: &'static str,
    behaviour: &'static str,
    expected: &'static str,
    limit: Duration,
    /// The policy's `timeoutEvalSeconds`. The allocating policy gets more than the looping
    /// one, so that on a busy machine its memory limit, not the clock, is what stops it.
    timeout_eval_seconds: u32,
}

const FAULTS: &[Fault] = &[
    Fault {
        id: "loops",
        label: "a policy that loops",
        behaviour: "loop",
        expected: "Policy execution interrupted because it exceeded the allowed execution time",
        limit: Duration::from_millis(1_700),
        timeout_eval_seconds: 1,
    },
    Fault {
        id: "allocates",
        label: "a policy that allocates without bound",
        behaviour: "allocate",
        expected: "exceeded its memory limit",
        limit: Duration::from_secs(3),
        timeout_eval_seconds: 2,
    },
    Fault {
        id: "traps",
        label: "a policy that traps",
        behaviour: "trap",
        expected: "the policy trapped",
        limit: Duration::from_millis(500),
        timeout_eval_seconds: 1,
    },
    Fault {
        id: "overflows-its-stack",
        label: "a policy that overflows its stack",
        behaviour: "recurse",
        expected: "overflowed its stack",
        limit: Duration::from_millis(500),
        timeout_eval_seconds: 1,
    },
];

/// The policy whose module download breaks off half-way (served by [`truncating_server`]).
const DOWNLOAD_FAULT: Fault = Fault {
    id: "download-broke-off",
    label: "a policy whose module download broke off",
    behaviour: "",
    expected: "the download broke off",
    limit: Duration::from_millis(500),
    timeout_eval_seconds: 1,
};

/// What happened to one hostile policy during the run.
#[derive(Debug, Default)]
struct FaultOutcome {
    calls: u32,
    slowest: Duration,
    wrong: Vec<String>,
}

/// Runs the fault suite against the policy-server `binary`.
pub fn run(root: &Path, seconds: u32, binary: &Path) -> Result<()> {
    if Command::new("wrk").arg("--version").output().is_err() {
        bail!("wrk is missing: apt-get install wrk");
    }
    let dir = cache_root().join("chaos");
    prepare_load_dir(&dir)?;
    let download_port = truncating_server()?;
    let policies = write_policies(root, &dir, download_port)?;
    let sources = dir.join("sources.yml");
    std::fs::write(
        &sources,
        format!("insecure_sources: [\"127.0.0.1:{download_port}\"]\n"),
    )?;
    let mut server = LocalPolicyServer::start(
        binary,
        &dir,
        &policies,
        &[
            "--workers",
            "2",
            "--log-level",
            "error",
            "--sources-path",
            &sources.display().to_string(),
        ],
    )?;
    let port = server.port;

    println!(
        "==> {seconds} s of load on /validate/accept-all (wrk, 4 connections) while hostile policies are called"
    );
    let load_dir = dir.clone();
    let load = std::thread::spawn(move || wrk(&load_dir, port, "/validate/accept-all", 4, seconds));
    let started = Instant::now();
    let run_for = Duration::from_secs(seconds.into());
    let faults: Vec<&Fault> = FAULTS.iter().chain([&DOWNLOAD_FAULT]).collect();
    let mut outcomes: Vec<FaultOutcome> = faults.iter().map(|_| FaultOutcome::default()).collect();
    let mut rotated = false;
    while started.elapsed() < run_for {
        for (fault, outcome) in faults.iter().zip(outcomes.iter_mut()) {
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
    let drain = sigterm_drains(&mut server, &dir)?;
    drop(server);

    let mut table = String::from(
        "| fault | calls under load | slowest answer | answers as expected | accept-all requests | accept-all failed |\n|---|---|---|---|---|---|\n",
    );
    let total = (load.requests_per_second * f64::from(seconds)).round();
    let mut failures = Vec::new();
    for (fault, outcome) in faults.iter().zip(&outcomes) {
        writeln!(
            table,
            "| {} | {} | {} ms (limit {} ms) | {} | {total:.0} | {} |",
            fault.label,
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
    writeln!(
        table,
        "| SIGTERM with {} requests in flight | {} answered | - | {} | - | - |",
        drain.in_flight,
        drain.answered,
        if drain.problems.is_empty() {
            "yes"
        } else {
            "no"
        }
    )?;
    failures.extend(drain.problems.iter().map(|p| format!("SIGTERM: {p}")));
    println!("\n{table}");
    let out = crate::cargo::output_dir("bench")?.join("chaos.md");
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

fn write_policies(root: &Path, dir: &Path, download_port: u16) -> Result<PathBuf> {
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
            serde_json::json!({"module": module("hostile.wasm"),
                "timeoutEvalSeconds": fault.timeout_eval_seconds,
                "settings": {"behaviour": fault.behaviour}}),
        );
    }
    policies.insert(
        DOWNLOAD_FAULT.id.into(),
        serde_json::json!({"module": format!("http://127.0.0.1:{download_port}/policy.wasm")}),
    );
    let path = dir.join("policies.yml");
    std::fs::write(&path, Value::Object(policies).to_string())?;
    Ok(path)
}

/// An HTTP server that promises 100 000 bytes, sends 1 000 and hangs up; returns its port.
fn truncating_server() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding the truncating server")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let mut answer =
                b"HTTP/1.1 200 OK\r\nContent-Type: application/wasm\r\nContent-Length: 100000\r\n\r\n"
                    .to_vec();
            answer.extend_from_slice(&[0u8; 1000]);
            let _ = stream.write_all(&answer);
        }
    });
    Ok(port)
}

/// What SIGTERM did to requests in flight.
struct Drain {
    in_flight: usize,
    answered: usize,
    problems: Vec<String>,
}

/// Sends SIGTERM while two slow requests (the looping policy, 1 s each) are in flight: both
/// must be answered, the server must exit successfully and refuse new requests.
fn sigterm_drains(server: &mut LocalPolicyServer, dir: &Path) -> Result<Drain> {
    const IN_FLIGHT: usize = 2;
    let port = server.port;
    let requests: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let dir = dir.to_path_buf();
            std::thread::spawn(move || call(&dir, port, "/validate/loops"))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .context("sending SIGTERM")?;
    if !status.success() {
        bail!("kill -TERM failed");
    }
    let mut problems = Vec::new();
    let mut answered = 0;
    for request in requests {
        let answer = request
            .join()
            .map_err(|_| anyhow::anyhow!("a request thread panicked"))??;
        let message = answer["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default();
        if message.contains(FAULTS[0].expected) {
            answered += 1;
        } else {
            problems.push(format!("an in-flight request got {answer}"));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(25);
    let exit = loop {
        if let Some(exit) = server.child.try_wait()? {
            break Some(exit);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    match exit {
        Some(exit) if exit.success() => {}
        other => problems.push(format!("the server did not exit cleanly: {other:?}")),
    }
    if call(dir, port, "/validate/accept-all")? != Value::Null {
        problems.push("the server still answered after SIGTERM".into());
    }
    Ok(Drain {
        in_flight: IN_FLIGHT,
        answered,
        problems,
    })
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
    post_insecure(port, path, &format!("@{}", dir.join("body.json").display()))
}
