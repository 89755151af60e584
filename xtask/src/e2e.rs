//! `cargo xtask e2e`: the end-to-end scenarios (`e2e/`) on the local control plane, with the
//! controller and the policy-servers running as local processes in its network namespace.
//! Logs of every component land in `target/e2e-logs/`; on failure the cluster state is dumped
//! there too.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cargo::{self, Binaries};
use crate::cluster::build::BackgroundBuild;
use crate::cluster::{self, ClusterLayout, NETNS};
use crate::progress::run_step as step;

/// `ip netns exec` mounts this over /etc/hosts: Service names of the e2e PolicyServers resolve
/// to the host, where their local processes listen.
fn hosts_file() -> PathBuf {
    PathBuf::from("/etc/netns").join(NETNS).join("hosts")
}

const HOSTS: &str =
    "127.0.0.1 localhost\n::1 localhost\n127.0.0.1 policy-server-default.kubewarden.svc\n";

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

/// The stack's binaries the local mode runs, all from one cargo build.
const STACK: [&str; 3] = ["controller", "policy-server", "audit-scanner"];

/// Builds the stack's binaries (plus what `extra` cargo arguments name) while the control plane
/// is built from Go beside it if it is not yet, and returns what cargo built.
pub fn build_stack(extra: &[&str], node: bool) -> Result<Binaries> {
    let go = BackgroundBuild::start(node, node)?;
    // `--bin` filters every selected package: each binary is named, or one `--bin` in `extra`
    // would leave the others out.
    let mut args = Vec::new();
    for binary in STACK {
        args.extend(["-p", binary, "--bin", binary]);
    }
    args.extend_from_slice(extra);
    let binaries = cargo::build(
        "building the controller, policy-server and audit-scanner",
        &args,
    )?;
    go.wait()?;
    Ok(binaries)
}

/// The directory of the stack's binaries, for the harness (`KUBEWARDEN_E2E_BIN_DIR`).
pub fn stack_dir(binaries: &Binaries) -> Result<PathBuf> {
    binaries.common_dir(&STACK)
}

/// The stack's binaries' directory and the scenarios' test executable, built (with the real
/// node's Go binaries beside them when `real_node`).
fn build_stack_and_scenarios(real_node: bool) -> Result<(PathBuf, PathBuf)> {
    let stack = build_stack(&[], real_node)?;
    let scenarios = cargo::build_tests(
        "compiling the end-to-end scenarios",
        &["-p", "e2e", "--test", "e2e"],
    )?;
    Ok((stack_dir(&stack)?, scenarios.test("e2e")?.to_path_buf()))
}

/// `cargo xtask e2e`: builds the stack and the scenarios, and runs them.
pub fn run() -> Result<()> {
    let (stack, scenarios) = build_stack_and_scenarios(false)?;
    run_scenarios(&stack, &scenarios)
}

/// `cargo xtask e2e --real-node`: builds the stack and the scenarios, then runs them on the
/// real node with the images and charts.
pub fn run_real_node() -> Result<()> {
    let (stack, scenarios) = build_stack_and_scenarios(true)?;
    crate::e2e_real_node::run(&stack, &scenarios)
}

/// Runs the scenarios' test executable `scenarios` inside the cluster's network namespace (the
/// control plane started and stopped around it unless it runs), with the stack's binaries in
/// `bin`.
pub fn run_scenarios(bin: &Path, scenarios: &Path) -> Result<()> {
    let logs = cargo::output_dir("e2e-logs")?;
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs)?;

    let layout = ClusterLayout::default_location();
    println!("==> local control plane");
    let already_up = cluster::is_up(&layout);
    if !already_up {
        cluster::up(&layout, 3, false)?;
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
            scenarios.display().to_string(),
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

const KIND_CLUSTER: &str = "kubewarden-e2e";
const FIXTURES: [&str; 3] = ["accept-all", "reject-by-label", "mutate-add-label"];

fn require(tool: &str, args: &[&str]) -> Result<()> {
    let ok = Command::new(tool)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        bail!(
            "`{tool} {}` does not work on this machine: kind mode needs Docker and kind; \
             without them use `cargo xtask e2e` (local control plane)",
            args.join(" ")
        );
    }
    Ok(())
}

/// Where the kind cluster's policy-servers fetch the test policies from (an nginx Deployment
/// serving them from a ConfigMap; `insecureSources` lets the PolicyServer use plain HTTP).
const FIXTURE_BASE: &str = "http://e2e-fixtures.kubewarden.svc";

/// `cargo xtask e2e --kind`: images built and loaded into a kind cluster, the charts installed,
/// the same scenarios run against real pods (the host network ones need the local mode).
pub fn run_kind(root: &Path) -> Result<()> {
    require("docker", &["info"])?;
    require("kind", &["version"])?;
    let helm = crate::helm::ensure()?;
    crate::images::run("ghcr.io", "e2e", false, crate::images::Engine::Docker)?;
    let target = cargo::target_dir()?;
    let logs = cargo::output_dir("e2e-logs")?;
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs)?;
    let clusters = Command::new("kind").args(["get", "clusters"]).output()?;
    if !String::from_utf8_lossy(&clusters.stdout)
        .lines()
        .any(|l| l == KIND_CLUSTER)
    {
        step(
            "creating the kind cluster",
            Command::new("kind").args([
                "create",
                "cluster",
                "--name",
                KIND_CLUSTER,
                "--wait",
                "180s",
            ]),
        )?;
    }
    step(
        "loading the images",
        Command::new("kind").args([
            "load",
            "docker-image",
            "--name",
            KIND_CLUSTER,
            "ghcr.io/kubewarden-rs/controller:e2e",
            "ghcr.io/kubewarden-rs/policy-server:e2e",
        ]),
    )?;
    let kubeconfig = target.join("e2e-kind.kubeconfig");
    let config = Command::new("kind")
        .args(["get", "kubeconfig", "--name", KIND_CLUSTER])
        .output()?;
    std::fs::write(&kubeconfig, config.stdout)?;
    let kubectl = |args: &[&str]| {
        let mut command = Command::new("kubectl");
        command
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(args);
        command
    };
    let helm_install = |release: &str, chart: &str, extra: &[&str]| {
        let mut command = Command::new(&helm);
        command
            .args([
                "upgrade",
                "--install",
                "--wait",
                "--timeout",
                "300s",
                "-n",
                "kubewarden",
                "--create-namespace",
            ])
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(release)
            .arg(root.join("charts").join(chart))
            .args(extra);
        command
    };
    step(
        "installing kubewarden-crds",
        &mut helm_install("kubewarden-crds", "kubewarden-crds", &[]),
    )?;
    step(
        "installing kubewarden-controller",
        &mut helm_install(
            "kubewarden-controller",
            "kubewarden-controller",
            &["--set", "image.tag=e2e", "--set", "image.pullPolicy=Never"],
        ),
    )?;
    let fixtures = root.join("crates/policy-evaluator/tests/fixtures");
    let mut create_cm = kubectl(&[
        "-n",
        "kubewarden",
        "create",
        "configmap",
        "e2e-fixtures",
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    for f in FIXTURES {
        create_cm.arg(format!(
            "--from-file={}",
            fixtures.join(format!("{f}.wasm")).display()
        ));
    }
    let rendered = create_cm.output()?;
    let cm_file = target.join("e2e-fixtures-configmap.yaml");
    std::fs::write(&cm_file, rendered.stdout)?;
    step(
        "the fixture ConfigMap",
        &mut kubectl(&["apply", "-f", &cm_file.display().to_string()]),
    )?;
    let server_file = target.join("e2e-fixtures-server.json");
    std::fs::write(&server_file, FIXTURE_SERVER)?;
    step(
        "the fixture server",
        &mut kubectl(&["apply", "-f", &server_file.display().to_string()]),
    )?;
    step(
        "waiting for the fixture server",
        &mut kubectl(&[
            "-n",
            "kubewarden",
            "rollout",
            "status",
            "deployment/e2e-fixtures",
            "--timeout=180s",
        ]),
    )?;

    let result = step(
        "scenarios",
        cargo::command()
            .args(["test", "-p", "e2e", "--test", "e2e", "--", "--nocapture"])
            .env("KUBEWARDEN_E2E_MODE", "kind")
            .env("KUBEWARDEN_E2E_FIXTURE_BASE", FIXTURE_BASE)
            .env("KUBEWARDEN_E2E_LOG_DIR", &logs)
            .env("KUBEWARDEN_TEST_KUBECONFIG", &kubeconfig)
            .env("KUBEWARDEN_REQUIRE_CLUSTER", "1"),
    );
    if result.is_err() {
        for (file, args) in [
            (
                "objects.yaml",
                vec![
                    "get",
                    "policyservers,clusteradmissionpolicies,admissionpolicies,deployments,pods",
                    "-A",
                    "-o",
                    "yaml",
                ],
            ),
            ("events.txt", vec!["get", "events", "-A"]),
            (
                "controller.log",
                vec![
                    "-n",
                    "kubewarden",
                    "logs",
                    "deployment/kubewarden-controller",
                    "--tail=-1",
                ],
            ),
            (
                "policy-server-default.log",
                vec![
                    "-n",
                    "kubewarden",
                    "logs",
                    "deployment/policy-server-default",
                    "--tail=-1",
                ],
            ),
        ] {
            if let Ok(output) = kubectl(&args).output() {
                let _ = std::fs::write(logs.join(file), output.stdout);
            }
        }
        println!("e2e failed; logs: {}", logs.display());
    }
    result
}

const FIXTURE_SERVER: &str = r#"{"apiVersion":"v1","kind":"List","items":[
{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"e2e-fixtures","namespace":"kubewarden"},
 "spec":{"selector":{"matchLabels":{"app":"e2e-fixtures"}},"template":{"metadata":{"labels":{"app":"e2e-fixtures"}},
  "spec":{"containers":[{"name":"nginx","image":"nginx:1.27-alpine","ports":[{"containerPort":80}],
   "volumeMounts":[{"name":"fixtures","mountPath":"/usr/share/nginx/html"}]}],
   "volumes":[{"name":"fixtures","configMap":{"name":"e2e-fixtures"}}]}}}},
{"apiVersion":"v1","kind":"Service","metadata":{"name":"e2e-fixtures","namespace":"kubewarden"},
 "spec":{"selector":{"app":"e2e-fixtures"},"ports":[{"port":80,"targetPort":80}]}}]}"#;
