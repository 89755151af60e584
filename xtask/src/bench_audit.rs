//! `cargo xtask bench audit`: the audit-scanner (release build) scanning N ConfigMaps with five
//! policies served by a real policy-server, on the local control plane. Prints resources/s,
//! evaluations/s and the scanner's peak RSS, and writes target/bench/audit-scanner.md.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::certs::write_localhost_certificates;
use crate::cluster::{self, ClusterLayout};
use crate::local_server::LocalPolicyServer;

const NAMESPACE: &str = "bench-audit";
const POLICIES: usize = 5;
/// Marks the ConfigMaps one of the policies rejects.
const DENIED_LABEL: &str = "bench-denied";

/// Entry point outside the network namespace: starts the cluster if needed and re-runs this
/// command inside it.
pub fn run(root: &Path, resources: u32) -> Result<()> {
    if std::env::var_os("KUBEWARDEN_CLUSTER_NETNS").is_some() {
        return run_inside(root, resources);
    }
    rerun_in_cluster(&["bench", "audit", "--resources", &resources.to_string()])
}

/// Starts the local control plane unless it is up, runs this xtask with `args` inside its
/// network namespace, and stops the control plane again if it started it.
pub(crate) fn rerun_in_cluster(args: &[&str]) -> Result<()> {
    let layout = ClusterLayout::default_location();
    let already_up = cluster::is_up(&layout);
    if !already_up {
        cluster::up(&layout, 3, false)?;
    }
    let exe = std::env::current_exe().context("locating xtask")?;
    let mut command = vec![exe.display().to_string()];
    command.extend(args.iter().map(|arg| arg.to_string()));
    let result = cluster::exec(&layout, &command);
    if !already_up {
        cluster::down(&layout)?;
    }
    result
}

pub(crate) fn kubectl(args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut command = Command::new("kubectl");
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().context("running kubectl")?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        pipe.write_all(text.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Creates the [`config_maps`] in `namespace` and says how long it took.
pub(crate) fn create_config_maps(namespace: &str, resources: u32) -> Result<()> {
    println!("==> creating {resources} ConfigMaps");
    let started = Instant::now();
    kubectl(
        &["create", "-f", "-", "-o", "name"],
        Some(&config_maps(namespace, resources)),
    )?;
    println!("    created in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `resources` ConfigMaps `cm-<i>` in `namespace`, as a List; labelled `bucket: i % 1000`,
/// and every second one with the denied label.
fn config_maps(namespace: &str, resources: u32) -> String {
    let items: Vec<serde_json::Value> = (0..resources)
        .map(|i| {
            let mut labels =
                serde_json::json!({"bench": "audit", "bucket": (i % 1000).to_string()});
            if i % 2 == 1 {
                labels[DENIED_LABEL] = "yes".into();
            }
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{i}"), "namespace": namespace, "labels": labels},
                "data": {"index": i.to_string()}})
        })
        .collect();
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

fn policy_name(i: usize) -> String {
    format!("bench-audit-{i}")
}

fn create_policies() -> Result<()> {
    for i in 0..POLICIES {
        let policy = serde_json::json!({
            "apiVersion": "policies.kubewarden.io/v1", "kind": "ClusterAdmissionPolicy",
            "metadata": {"name": policy_name(i)},
            "spec": {"module": "registry://example.invalid/unused:v1", "mutating": false,
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"], "operations": ["CREATE"]}],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}},
                "failurePolicy": "Ignore"}
        });
        kubectl(&["apply", "-f", "-"], Some(&policy.to_string()))?;
        // No controller runs: give the policy the status an active one has.
        kubectl(
            &[
                "patch",
                "clusteradmissionpolicy",
                &policy_name(i),
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"policyStatus":"active","mode":"protect"}}"#,
            ],
            None,
        )?;
    }
    Ok(())
}

/// Deletes `namespace` (waiting until it is gone) and creates it again, empty.
pub(crate) fn recreate_namespace(namespace: &str) -> Result<()> {
    delete_namespace(namespace);
    kubectl(&["create", "namespace", namespace], None)?;
    Ok(())
}

fn delete_namespace(namespace: &str) {
    let _ = kubectl(
        &[
            "delete",
            "namespace",
            namespace,
            "--ignore-not-found",
            "--wait=true",
        ],
        None,
    );
}

fn cleanup() {
    delete_namespace(NAMESPACE);
    for i in 0..POLICIES {
        let _ = kubectl(
            &[
                "delete",
                "clusteradmissionpolicy",
                &policy_name(i),
                "--ignore-not-found",
            ],
            None,
        );
    }
}

fn run_inside(root: &Path, resources: u32) -> Result<()> {
    let binaries = crate::cargo::build(
        "building the policy-server and the audit-scanner (release)",
        &["--release", "-p", "policy-server", "-p", "audit-scanner"],
    )?;
    let dir = crate::cargo::output_dir("bench")?.join("audit");
    std::fs::create_dir_all(&dir)?;
    write_localhost_certificates(&dir)?;

    cleanup();
    kubectl(&["create", "namespace", NAMESPACE], None)?;
    create_config_maps(NAMESPACE, resources)?;
    create_policies()?;

    let fixtures = root.join("crates/policy-evaluator/tests/fixtures");
    let mut policies = serde_json::Map::new();
    for i in 0..POLICIES {
        let entry = if i < 2 {
            serde_json::json!({"module": format!("file://{}", fixtures.join("reject-by-label.wasm").display()),
                "settings": {"denied_labels": [DENIED_LABEL]}})
        } else {
            serde_json::json!({"module": format!("file://{}", fixtures.join("accept-all.wasm").display())})
        };
        policies.insert(format!("clusterwide-{}", policy_name(i)), entry);
    }
    let policies_file = dir.join("policies.yml");
    std::fs::write(
        &policies_file,
        serde_json::Value::Object(policies).to_string(),
    )?;
    let server =
        LocalPolicyServer::start(binaries.path("policy-server")?, &dir, &policies_file, &[])?;

    println!("==> scanning");
    let started = Instant::now();
    let output = Command::new(binaries.path("audit-scanner")?)
        .args(["-n", NAMESPACE, "--report-kind", "openreports"])
        .args(["-u", &format!("https://localhost:{}", server.port)])
        .arg("--extra-ca")
        .arg(dir.join("ca.crt"))
        .output()
        .context("running the audit-scanner")?;
    let seconds = started.elapsed().as_secs_f64();
    let logs = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("the audit-scanner failed: {}", logs.trim());
    }
    let field = |name: &str| -> u64 {
        logs.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["fields"][name].as_u64())
            .next_back()
            .unwrap_or(0)
    };
    let (scanned, reports, peak_kib) =
        (field("resources"), field("reports"), field("peak_rss_kib"));
    let (server_peak, _) = server.memory_kib();
    drop(server);
    cleanup();

    let evaluations = scanned as f64 * POLICIES as f64;
    let mut table = String::new();
    writeln!(
        table,
        "| resources | policies | seconds | resources/s | evaluations/s | reports | scanner peak RSS MiB | policy-server peak RSS MiB |"
    )?;
    writeln!(table, "|---|---|---|---|---|---|---|---|")?;
    writeln!(
        table,
        "| {scanned} | {POLICIES} | {seconds:.1} | {:.0} | {:.0} | {reports} | {:.1} | {:.1} |",
        scanned as f64 / seconds,
        evaluations / seconds,
        peak_kib as f64 / 1024.0,
        server_peak as f64 / 1024.0
    )?;
    println!("{table}");
    std::fs::write(
        crate::cargo::output_dir("bench")?.join("audit-scanner.md"),
        &table,
    )?;
    if scanned != u64::from(resources) + 1 {
        // +1: the kube-root-ca.crt ConfigMap of the namespace.
        bail!("scanned {scanned} resources, expected {}", resources + 1);
    }
    Ok(())
}
