//! `cargo xtask demo`: the main job in one command — the stack on the local control plane, a demo
//! policy, one pod rejected and one admitted ([`run_cluster`]). `cargo xtask demo --server`
//! ([`run`]): the policy-server alone, over HTTPS on a demo policy, one AdmissionReview it
//! rejects and one it accepts.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::certs::write_localhost_certificates;
use crate::local_server::{LocalPolicyServer, build};
use crate::paths::cache_root;

/// An AdmissionReview creating a Pod with the given labels (a JSON object).
pub fn pod_review(name: &str, labels: &str) -> String {
    format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"demo-{name}","kind":{{"group":"","version":"v1","kind":"Pod"}},"resource":{{"group":"","version":"v1","resource":"pods"}},"operation":"CREATE","namespace":"default","name":"{name}","object":{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{labels}}},"spec":{{"containers":[{{"name":"c","image":"nginx"}}]}}}}}}}}"#
    )
}

fn send(dir: &Path, port: u16, body: &str) -> Result<String> {
    let mut child = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(dir.join("ca.crt"))
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ])
        .arg(format!(
            "https://localhost:{port}/validate/no-forbidden-label"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running curl")?;
    child
        .stdin
        .take()
        .context("curl stdin")?
        .write_all(body.as_bytes())?;
    let output = child.wait_with_output()?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

pub fn run(root: &Path) -> Result<()> {
    let binary = build(false)?;
    let dir = cache_root().join("demo");
    std::fs::create_dir_all(&dir)?;
    write_localhost_certificates(&dir)?;
    let fixtures = root.join("crates/policy-evaluator/tests/fixtures");
    let policies = std::fs::read_to_string(root.join("demo/policies.yml"))?
        .replace("${FIXTURES}", &fixtures.display().to_string());
    std::fs::write(dir.join("policies.yml"), policies)?;
    let server = LocalPolicyServer::start(&binary, &dir, &dir.join("policies.yml"), &[])?;
    println!(
        "==> policy-server on https://localhost:{} serving demo/policies.yml",
        server.port
    );
    println!("==> a Pod labelled forbidden=true (expected: rejected)");
    println!(
        "{}",
        send(
            &dir,
            server.port,
            &pod_review("rejected-pod", r#"{"forbidden":"true"}"#)
        )?
    );
    println!("==> a Pod labelled app=web (expected: accepted)");
    println!(
        "{}",
        send(
            &dir,
            server.port,
            &pod_review("accepted-pod", r#"{"app":"web"}"#)
        )?
    );
    Ok(())
}

/// `cargo xtask demo`: the whole stack on the local control plane (building and starting it
/// when needed), a demo policy, one pod rejected and one admitted through the apiserver.
pub fn run_cluster() -> Result<()> {
    let started = Instant::now();
    crate::preflight::require_cluster_tools()?;
    let binaries = crate::e2e::build_stack(&["-p", "e2e", "--bin", "cluster-demo"], false)?;
    let bin = crate::e2e::stack_dir(&binaries)?;
    let layout = crate::cluster::ClusterLayout::default_location();
    let already_up = crate::cluster::is_up(&layout);
    if !already_up {
        crate::cluster::up(&layout, 3, false).context(
            "starting the local control plane (`cargo xtask demo --server` runs the \
             policy-server alone, without a cluster or root)",
        )?;
    }
    let logs = crate::cargo::output_dir("demo-logs")?;
    let result = crate::cluster::exec(
        &layout,
        &[
            "env".to_string(),
            format!("KUBEWARDEN_E2E_BIN_DIR={}", bin.display()),
            format!("KUBEWARDEN_E2E_LOG_DIR={}", logs.display()),
            binaries.path("cluster-demo")?.display().to_string(),
        ],
    );
    if !already_up {
        crate::cluster::down(&layout)?;
    }
    result?;
    println!(
        "==> demo done in {}",
        crate::progress::elapsed(started.elapsed())
    );
    Ok(())
}
