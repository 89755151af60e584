//! `cargo xtask e2e`: the end-to-end scenarios (`e2e/`) on the local control plane, with the
//! controller and the policy-servers running as local processes in its network namespace.
//! Logs of every component land in `target/e2e-logs/`; on failure the cluster state is dumped
//! there too.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cluster::{self, ClusterLayout, NETNS};

/// `ip netns exec` mounts this over /etc/hosts: Service names of the e2e PolicyServers resolve
/// to the host, where their local processes listen.
fn hosts_file() -> PathBuf {
    PathBuf::from("/etc/netns").join(NETNS).join("hosts")
}

const HOSTS: &str =
    "127.0.0.1 localhost\n::1 localhost\n127.0.0.1 policy-server-default.kubewarden.svc\n";

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn dump_cluster_state(layout: &ClusterLayout, logs: &Path) {
    let kinds = "policyservers,clusteradmissionpolicies,admissionpolicies,deployments,replicasets,pods,services,endpointslices,validatingwebhookconfigurations,mutatingwebhookconfigurations";
    for (file, args) in [
        ("objects.yaml", vec!["get", kinds, "-A", "-o", "yaml"]),
        (
            "events.txt",
            vec!["get", "events", "-A", "--sort-by=.lastTimestamp"],
        ),
    ] {
        let output = Command::new("ip")
            .args(["netns", "exec", NETNS, "kubectl"])
            .arg(format!("--kubeconfig={}", layout.kubeconfig().display()))
            .args(&args)
            .output();
        if let Ok(output) = output {
            let _ = std::fs::write(logs.join(file), output.stdout);
        }
    }
    let _ = Command::new("cp")
        .arg("-r")
        .arg(layout.logs())
        .arg(logs.join("control-plane"))
        .status();
}

/// Builds the stack's binaries (plus `extra` cargo arguments) and returns their directory.
pub fn build_binaries(root: &Path, extra: &[&str]) -> Result<PathBuf> {
    println!("==> building the controller, policy-server and audit-scanner");
    let status = cargo()
        .args([
            "build",
            "--quiet",
            "-p",
            "controller",
            "-p",
            "policy-server",
            "-p",
            "audit-scanner",
        ])
        .args(extra)
        .status()?;
    if !status.success() {
        bail!("building the binaries failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("debug"))
}

pub fn run(root: &Path) -> Result<()> {
    let bin = build_binaries(root, &[])?;
    let target = bin
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.join("target"));
    let logs = target.join("e2e-logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs)?;

    let layout = ClusterLayout::default_location();
    println!("==> local control plane");
    let already_up = cluster::is_up(&layout);
    if !already_up {
        cluster::up(&layout, 3)?;
    }
    std::fs::create_dir_all(hosts_file().parent().context("hosts dir")?)?;
    std::fs::write(hosts_file(), HOSTS).context("writing the network namespace's hosts file")?;

    println!("==> scenarios (logs in {})", logs.display());
    let result = cluster::exec(
        &layout,
        &[
            "env".to_string(),
            "KUBEWARDEN_E2E_MODE=local".to_string(),
            format!("KUBEWARDEN_E2E_BIN_DIR={}", bin.display()),
            format!("KUBEWARDEN_E2E_LOG_DIR={}", logs.display()),
            "KUBEWARDEN_REQUIRE_CLUSTER=1".to_string(),
            std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()),
            "test".to_string(),
            "--quiet".to_string(),
            "-p".to_string(),
            "e2e".to_string(),
            "--test".to_string(),
            "e2e".to_string(),
            "--".to_string(),
            "--nocapture".to_string(),
        ],
    );
    if result.is_err() {
        dump_cluster_state(&layout, &logs);
        println!("e2e failed; logs of every component: {}", logs.display());
    }
    let _ = std::fs::remove_file(hosts_file());
    if !already_up {
        cluster::down(&layout)?;
    }
    result
}
