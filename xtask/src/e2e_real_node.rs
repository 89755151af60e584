//! `cargo xtask e2e --real-node`: the stack as users run it. The images are built from the
//! Dockerfiles (buildah, binaries from cargo), pushed to the node's registry, the three charts
//! are installed with helm on the local control plane's real node (kubelet + containerd), and
//! the end-to-end scenarios run against those pods: on the pod network with the chart's mTLS
//! mode, then with the controller and the PolicyServers in host network mode.
//! Then the controller is uninstalled while a policy is still enforced: its pre-delete hook must
//! leave no PolicyServer and no webhook configuration behind, and the namespace must go.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::cargo;
use crate::cluster::node::{self, REGISTRY};
use crate::cluster::{self, ClusterLayout, NETNS};
use crate::images;
use crate::progress::run_step as step;

/// The Service the scenarios' PolicyServers fetch the test policies from. It has no selector:
/// its EndpointSlice points at a file server on the node's address.
const FIXTURE_SERVICE: &str = "e2e-fixtures";
const FIXTURE_PORT: u16 = 8090;
const NAMESPACE: &str = "kubewarden";
/// ConfigMap (key `client-ca.crt`) the chart's `mTLS.configMapName` names: the cluster CA, which
/// signed the apiserver's webhook client certificate (see `pki::webhook_admission_config`).
const CLIENT_CA_CONFIGMAP: &str = "e2e-client-ca";

/// A command inside the cluster's network namespace, where the apiserver and registry are.
fn in_netns(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", NETNS]).arg(program);
    command
}

/// kubectl on the cluster, its output shown (a step); [`cluster::kubectl`] captures it.
fn kubectl(layout: &ClusterLayout, args: &[&str]) -> Command {
    let mut command = in_netns("kubectl");
    command
        .arg(format!("--kubeconfig={}", layout.kubeconfig().display()))
        .args(args);
    command
}

/// A plain HTTP server for the fixture modules, on the node's address; stopped on drop.
struct FixtureServer(Child);

impl FixtureServer {
    fn start(logs: &Path) -> Result<Self> {
        let dir = crate::paths::repo_root().join("crates/policy-evaluator/tests/fixtures");
        let log = std::fs::File::create(logs.join("fixture-server.log"))?;
        let child = in_netns("python3")
            .args(["-m", "http.server", "--bind", "10.250.1.1"])
            .arg(FIXTURE_PORT.to_string())
            .arg("--directory")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the fixture server (python3 -m http.server)")?;
        Ok(FixtureServer(child))
    }
}

impl Drop for FixtureServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fixture_manifest() -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: {FIXTURE_SERVICE}
  namespace: {NAMESPACE}
spec:
  ports:
  - {{name: http, port: 80, targetPort: {FIXTURE_PORT}, protocol: TCP}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {FIXTURE_SERVICE}-node
  namespace: {NAMESPACE}
  labels:
    kubernetes.io/service-name: {FIXTURE_SERVICE}
addressType: IPv4
endpoints:
- addresses: [10.250.1.1]
  conditions:
    ready: true
ports:
- {{name: http, port: {FIXTURE_PORT}, protocol: TCP}}
"#
    )
}

fn client_ca_manifest(ca_pem: &str) -> String {
    let indented: String = ca_pem.lines().map(|line| format!("    {line}\n")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {CLIENT_CA_CONFIGMAP}\n  namespace: {NAMESPACE}\ndata:\n  client-ca.crt: |\n{indented}"
    )
}

/// Runs the scenarios on the real node with the stack's binaries in `bin` (debug or release,
/// whatever cargo built) and the scenarios' test executable.
pub fn run(bin: &Path, scenarios: &Path) -> Result<()> {
    let started = std::time::Instant::now();
    crate::preflight::require_real_node_tools()?;
    let helm = crate::helm::ensure()?;
    let logs = cargo::output_dir("e2e-logs")?;
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs)?;
    let layout = ClusterLayout::default_location();
    let already_up = cluster::is_up(&layout);
    if already_up && !node::is_configured(&layout) {
        bail!(
            "the local cluster runs without a real node; stop it with `cargo xtask cluster down` \
             (the real-node e2e starts one with --real-node)"
        );
    }
    if already_up && !cluster::apiserver_has_webhook_client_cert(&layout) {
        bail!(
            "the local cluster's apiserver presents no client certificate to webhooks (it was \
             started by an older xtask), so the mTLS pass cannot run; restart it with \
             `cargo xtask cluster down` and `cargo xtask cluster up --real-node`"
        );
    }
    if !already_up {
        cluster::up(&layout, 0, true)?;
    }
    let result = install_and_run(&layout, &helm, bin, scenarios, &logs);
    if result.is_err() {
        save_state(&layout, &logs);
        println!(
            "real-node e2e failed; logs of every pod and component: {}",
            logs.display()
        );
    }
    if !already_up {
        cluster::down(&layout)?;
    }
    result?;
    println!(
        "==> real-node e2e passed in {}",
        crate::progress::elapsed(started.elapsed())
    );
    Ok(())
}

fn install_and_run(
    layout: &ClusterLayout,
    helm: &Path,
    bin: &Path,
    scenarios: &Path,
    logs: &Path,
) -> Result<()> {
    // A tag per run: the node keeps pulled images, and `IfNotPresent` must not reuse old ones.
    let tag = format!(
        "e2e-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    );
    let built = images::build_with_buildah(bin, REGISTRY, &tag)?;
    for image in &built {
        node::push_in_netns(image, image)?;
    }
    // The registry holds them now; a tag per run would otherwise pile up in buildah's store.
    images::remove_from_buildah(&built);
    let root = crate::paths::repo_root();
    let helm_install = |release: &str, chart: &str, values: &[String]| {
        let mut command = in_netns(helm);
        command
            .args(["upgrade", "--install", "--wait", "--timeout", "300s"])
            .args(["-n", NAMESPACE, "--create-namespace"])
            .arg(format!("--kubeconfig={}", layout.kubeconfig().display()))
            .arg(release)
            .arg(root.join("charts").join(chart));
        for value in values {
            command.args(["--set", value]);
        }
        command
    };
    let registry = format!("global.cattle.systemDefaultRegistry={REGISTRY}");
    step(
        "helm install kubewarden-crds",
        &mut helm_install("kubewarden-crds", "kubewarden-crds", &[]),
    )?;
    let _fixtures = FixtureServer::start(logs)?;
    let fixture_base = format!("http://{FIXTURE_SERVICE}.{NAMESPACE}.svc");
    // The namespace exists now (helm made it): the client CA the mTLS pass names.
    let ca_pem = std::fs::read_to_string(layout.pki().join("ca.crt"))?;
    let client_ca = logs.join("client-ca.yaml");
    std::fs::write(&client_ca, client_ca_manifest(&ca_pem))?;
    step(
        "the client CA ConfigMap for mTLS",
        &mut kubectl(layout, &["apply", "-f", &client_ca.display().to_string()]),
    )?;
    // The journey twice: on the pod network with the chart's mTLS mode (the apiserver and the
    // audit-scanner present client certificates), then with the controller and every
    // PolicyServer in host network mode, without mTLS.
    for host_network in [false, true] {
        let mtls = !host_network;
        let network = if host_network {
            "host network mode"
        } else {
            "pod network, mTLS"
        };
        let mut controller_values = vec![
            registry.clone(),
            format!("image.tag={tag}"),
            format!("hostNetwork={host_network}"),
            format!("mTLS.enable={mtls}"),
        ];
        if mtls {
            controller_values.push(format!("mTLS.configMapName={CLIENT_CA_CONFIGMAP}"));
        }
        if host_network {
            // One node: the controller's health port must not be the PolicyServers'
            // readiness port 8081 (upstream's host network guide says the same).
            controller_values.push("ports.healthProbe=8091".into());
        }
        step(
            &format!("helm install kubewarden-controller ({network})"),
            &mut helm_install(
                "kubewarden-controller",
                "kubewarden-controller",
                &controller_values,
            ),
        )?;
        if !host_network {
            let manifest = logs.join("fixtures.yaml");
            std::fs::write(&manifest, fixture_manifest())?;
            step(
                "the fixture Service",
                &mut kubectl(layout, &["apply", "-f", &manifest.display().to_string()]),
            )?;
        }
        step(
            "helm install kubewarden-defaults",
            &mut helm_install(
                "kubewarden-defaults",
                "kubewarden-defaults",
                &[
                    registry.clone(),
                    format!("policyServer.image.tag={tag}"),
                    format!("policyServer.insecureSources={{{FIXTURE_SERVICE}.{NAMESPACE}.svc}}"),
                ],
            ),
        )?;
        if host_network {
            step(
                "the controller moves the default PolicyServer to the host network",
                &mut kubectl(
                    layout,
                    &[
                        "-n",
                        NAMESPACE,
                        "wait",
                        "deployment/policy-server-default",
                        "--for=jsonpath={.spec.template.spec.hostNetwork}=true",
                        "--timeout=120s",
                    ],
                ),
            )?;
        }
        step(
            "the default PolicyServer becomes ready",
            &mut kubectl(
                layout,
                &[
                    "-n",
                    NAMESPACE,
                    "rollout",
                    "status",
                    "deployment/policy-server-default",
                    "--timeout=300s",
                ],
            ),
        )?;
        println!("==> scenarios, {network} (logs in {})", logs.display());
        cluster::exec(
            layout,
            &[
                "env".to_string(),
                "KUBEWARDEN_E2E_MODE=real-node".to_string(),
                format!("KUBEWARDEN_E2E_HOST_NETWORK={host_network}"),
                format!("KUBEWARDEN_E2E_MTLS={mtls}"),
                format!("KUBEWARDEN_E2E_FIXTURE_BASE={fixture_base}"),
                format!(
                    "KUBEWARDEN_E2E_POLICY_SERVER_IMAGE={REGISTRY}/kubewarden-rs/policy-server:{tag}"
                ),
                format!("KUBEWARDEN_E2E_BIN_DIR={}", bin.display()),
                format!("KUBEWARDEN_E2E_LOG_DIR={}", logs.display()),
                "KUBEWARDEN_REQUIRE_CLUSTER=1".to_string(),
                scenarios.display().to_string(),
                "--nocapture".to_string(),
            ],
        )
        .with_context(|| format!("the scenarios on the real node, {network}"))?;
    }
    uninstall(layout, helm, logs)
}

/// A policy left on the default PolicyServer, enforced until the controller goes.
fn uninstall_policy_manifest(fixture_base: &str) -> String {
    format!(
        r#"apiVersion: policies.kubewarden.io/v1
kind: ClusterAdmissionPolicy
metadata:
  name: {UNINSTALL_POLICY}
spec:
  policyServer: default
  module: {fixture_base}/reject-by-label.wasm
  settings: {{denied_labels: [e2e-uninstall]}}
  mutating: false
  rules:
  - {{apiGroups: [""], apiVersions: [v1], resources: [pods], operations: [CREATE]}}
  namespaceSelector:
    matchLabels: {{kubernetes.io/metadata.name: e2e-uninstall}}
"#
    )
}

const UNINSTALL_POLICY: &str = "e2e-uninstall";

/// Kubewarden's webhook configurations that still exist.
fn webhook_leftovers(layout: &ClusterLayout) -> Vec<String> {
    let left = cluster::kubectl(
        layout,
        &[
            "get",
            "validatingwebhookconfigurations,mutatingwebhookconfigurations",
            "-l",
            "app.kubernetes.io/part-of=kubewarden",
            "-o",
            "name",
        ],
    )
    .unwrap_or_default();
    left.lines().map(str::to_string).collect()
}

/// Uninstalls as upstream's docs say a user may: the controller first, while a policy is still
/// enforced by the defaults chart's PolicyServer. The chart's pre-delete hook must delete the
/// PolicyServers and wait until the controller removed their policies' webhooks; then the
/// other releases go and the namespace must be deletable.
fn uninstall(layout: &ClusterLayout, helm: &Path, logs: &Path) -> Result<()> {
    let manifest = logs.join("uninstall-policy.yaml");
    std::fs::write(
        &manifest,
        uninstall_policy_manifest(&format!("http://{FIXTURE_SERVICE}.{NAMESPACE}.svc")),
    )?;
    step(
        "a policy still enforced when the controller is uninstalled",
        &mut kubectl(layout, &["apply", "-f", &manifest.display().to_string()]),
    )?;
    step(
        "it becomes active",
        &mut kubectl(
            layout,
            &[
                "wait",
                &format!("clusteradmissionpolicy/{UNINSTALL_POLICY}"),
                "--for=jsonpath={.status.policyStatus}=active",
                "--timeout=300s",
            ],
        ),
    )?;
    if webhook_leftovers(layout).is_empty() {
        bail!("the active policy {UNINSTALL_POLICY} has no webhook configuration");
    }
    let helm_uninstall = |release: &str| {
        let mut command = in_netns(helm);
        command
            .args(["uninstall", "--wait", "--timeout", "300s", "-n", NAMESPACE])
            .arg(format!("--kubeconfig={}", layout.kubeconfig().display()))
            .arg(release);
        command
    };
    step(
        "helm uninstall kubewarden-controller (its pre-delete hook deletes the PolicyServers)",
        &mut helm_uninstall("kubewarden-controller"),
    )?;
    let left = webhook_leftovers(layout);
    if !left.is_empty() {
        bail!(
            "helm uninstall kubewarden-controller left webhook configurations behind: {}",
            left.join(", ")
        );
    }
    let servers =
        cluster::kubectl(layout, &["get", "policyservers", "-o", "name"]).unwrap_or_default();
    if !servers.trim().is_empty() {
        bail!("helm uninstall kubewarden-controller left PolicyServers behind: {servers}");
    }
    println!("==> the controller's uninstall left no PolicyServer and no webhook behind");
    step(
        "helm uninstall kubewarden-defaults",
        &mut helm_uninstall("kubewarden-defaults"),
    )?;
    // With no controller left, nothing releases the policy's finalizer: what an operator does
    // with policies kept after the uninstall, before the CRDs go.
    step(
        "the kept policy's finalizer released by hand",
        &mut kubectl(
            layout,
            &[
                "patch",
                &format!("clusteradmissionpolicy/{UNINSTALL_POLICY}"),
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ],
        ),
    )?;
    step(
        "delete the kept policy",
        &mut kubectl(
            layout,
            &[
                "delete",
                &format!("clusteradmissionpolicy/{UNINSTALL_POLICY}"),
                "--wait",
                "--timeout=60s",
            ],
        ),
    )?;
    step(
        "helm uninstall kubewarden-crds",
        &mut helm_uninstall("kubewarden-crds"),
    )?;
    step(
        "the namespace is deletable",
        &mut kubectl(
            layout,
            &["delete", "namespace", NAMESPACE, "--wait", "--timeout=180s"],
        ),
    )?;
    println!("==> uninstalled: no webhook configuration, PolicyServer or namespace left");
    Ok(())
}

/// Every pod's logs (all containers, and the previous run of restarted ones), the objects,
/// events and the node's and control plane's own logs.
fn save_state(layout: &ClusterLayout, logs: &Path) {
    let kinds = "policyservers,clusteradmissionpolicies,admissionpolicies,deployments,replicasets,pods,services,endpointslices,jobs,cronjobs,validatingwebhookconfigurations,mutatingwebhookconfigurations,nodes";
    for (file, args) in [
        ("objects.yaml", vec!["get", kinds, "-A", "-o", "yaml"]),
        (
            "events.txt",
            vec!["get", "events", "-A", "--sort-by=.lastTimestamp"],
        ),
        ("pods.txt", vec!["get", "pods", "-A", "-o", "wide"]),
    ] {
        if let Some(output) = cluster::kubectl(layout, &args) {
            let _ = std::fs::write(logs.join(file), output);
        }
    }
    let pods = cluster::kubectl(
        layout,
        &[
            "get",
            "pods",
            "-A",
            "-o",
            "jsonpath={range .items[*]}{.metadata.namespace}{\" \"}{.metadata.name}{\"\\n\"}{end}",
        ],
    )
    .unwrap_or_default();
    let pod_logs = logs.join("pods");
    let _ = std::fs::create_dir_all(&pod_logs);
    for line in pods.lines() {
        let Some((namespace, pod)) = line.split_once(' ') else {
            continue;
        };
        for (suffix, previous) in [("", false), (".previous", true)] {
            let mut args = vec!["-n", namespace, "logs", pod, "--all-containers"];
            if previous {
                args.push("--previous");
            }
            if let Some(output) = cluster::kubectl(layout, &args) {
                let _ = std::fs::write(
                    pod_logs.join(format!("{namespace}_{pod}{suffix}.log")),
                    output,
                );
            }
        }
    }
    let _ = Command::new("cp")
        .arg("-r")
        .arg(layout.logs())
        .arg(logs.join("components"))
        .status();
}
