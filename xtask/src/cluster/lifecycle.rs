//! Starting, inspecting and stopping the local control plane.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{NETNS, build, pki};
use crate::paths::cache_root;

/// Address of the apiserver inside the namespace (on a veth, so it is not loopback).
pub(super) const ADVERTISE_ADDRESS: &str = "10.250.1.1";
/// Fake nodes get consecutive addresses in this /24, routed to the namespace's loopback.
const NODE_NETWORK: &str = "10.250.2";
/// Pod addresses kwok hands out; routed to the namespace's loopback so that a process
/// listening on 0.0.0.0:<port> answers for every pod.
const POD_CIDR: &str = "10.244.0.0/16";
const SERVICE_CIDR: &str = "10.96.0.0/16";
const SERVICE_IP: &str = "10.96.0.1";
const APISERVER_URL: &str = "https://127.0.0.1:6443";

/// Components in start order.
const COMPONENTS: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
];

/// Where a cluster keeps its state: PKI, etcd data, logs, pid files, kubeconfig.
#[derive(Debug, Clone)]
pub struct ClusterLayout {
    pub root: PathBuf,
}

impl ClusterLayout {
    pub fn default_location() -> Self {
        let root = std::env::var_os("KUBEWARDEN_CLUSTER_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache_root().join("cluster"));
        ClusterLayout { root }
    }

    pub fn pki(&self) -> PathBuf {
        self.root.join("pki")
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    fn pids(&self) -> PathBuf {
        self.root.join("pids")
    }
    fn etcd_data(&self) -> PathBuf {
        self.root.join("etcd-data")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }

    /// Shell lines that point kubectl and the cluster tests at this cluster.
    pub fn env_script(&self) -> String {
        let kubeconfig = self.kubeconfig().display().to_string();
        format!(
            "export KUBECONFIG={kubeconfig}\nexport KUBEWARDEN_TEST_KUBECONFIG={kubeconfig}\nexport KUBEWARDEN_CLUSTER_NETNS={NETNS}\n# The apiserver is only reachable inside the network namespace: run commands with\n#   ip netns exec {NETNS} <command>   or   cargo xtask cluster exec -- <command>\n"
        )
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip`; install iproute2")?;
    if !output.status.success() {
        bail!(
            "`ip {}` failed: {} (network namespaces need root or CAP_NET_ADMIN)",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn netns_exists() -> bool {
    Path::new("/run/netns").join(NETNS).exists()
}

fn create_netns() -> Result<()> {
    ip(&["netns", "add", NETNS])?;
    let steps: Vec<Vec<String>> = vec![
        vec!["link".into(), "set".into(), "lo".into(), "up".into()],
        "link add veth0 type veth peer name veth1"
            .split(' ')
            .map(String::from)
            .collect(),
        vec![
            "addr".into(),
            "add".into(),
            format!("{ADVERTISE_ADDRESS}/24"),
            "dev".into(),
            "veth0".into(),
        ],
        "link set veth0 up".split(' ').map(String::from).collect(),
        "link set veth1 up".split(' ').map(String::from).collect(),
        "route add default dev veth0"
            .split(' ')
            .map(String::from)
            .collect(),
        vec![
            "route".into(),
            "add".into(),
            "local".into(),
            POD_CIDR.into(),
            "dev".into(),
            "lo".into(),
        ],
        vec![
            "route".into(),
            "add".into(),
            "local".into(),
            format!("{NODE_NETWORK}.0/24"),
            "dev".into(),
            "lo".into(),
        ],
    ];
    for step in steps {
        let mut args = vec!["-n", NETNS];
        args.extend(step.iter().map(String::as_str));
        ip(&args)?;
    }
    Ok(())
}

/// Runs a command inside the namespace and returns its stdout, or `None` if it failed.
pub(super) fn in_netns_output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new("ip")
        .args(["netns", "exec", NETNS, program])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// kubectl on the cluster inside the namespace; its output, or `None` if it failed.
pub fn kubectl(layout: &ClusterLayout, args: &[&str]) -> Option<String> {
    let kubeconfig = format!("--kubeconfig={}", layout.kubeconfig().display());
    let mut all = vec![kubeconfig.as_str()];
    all.extend_from_slice(args);
    in_netns_output("kubectl", &all)
}

fn spawn(layout: &ClusterLayout, name: &str, program: &Path, args: &[String]) -> Result<()> {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", NETNS])
        .arg(program)
        .args(args);
    spawn_command(layout, name, &mut command)
}

/// Starts `command` as component `name`: output appended to its log, pid in its pid file.
pub(super) fn spawn_command(
    layout: &ClusterLayout,
    name: &str,
    command: &mut Command,
) -> Result<()> {
    let log_path = layout.logs().join(format!("{name}.log"));
    // Appended: a restarted component keeps what it logged before.
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group, so `down` can stop it with everything it started.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    fs::write(layout.pids().join(name), child.id().to_string()).context("writing pid file")?;
    Ok(())
}

pub(super) fn wait_for(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if ready() {
            println!(
                "  {what}: ready after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        sleep(Duration::from_millis(250));
    }
    bail!("{what} not ready after {} s", timeout.as_secs())
}

pub(super) fn pid_of(layout: &ClusterLayout, name: &str) -> Option<u32> {
    fs::read_to_string(layout.pids().join(name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether the running apiserver presents a client certificate to webhooks (it was started
/// with the admission configuration of [`pki::webhook_admission_config`]); clusters started by
/// an older xtask were not.
pub fn apiserver_has_webhook_client_cert(layout: &ClusterLayout) -> bool {
    pid_of(layout, "kube-apiserver")
        .and_then(|pid| fs::read(format!("/proc/{pid}/cmdline")).ok())
        .is_some_and(|cmdline| {
            String::from_utf8_lossy(&cmdline).contains("--admission-control-config-file=")
        })
}

/// Whether a process exists and is not a zombie.
pub(super) fn is_running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

pub(super) fn component_failed(layout: &ClusterLayout, name: &str) -> Option<String> {
    let running = pid_of(layout, name).is_some_and(is_running);
    if running {
        return None;
    }
    let log = layout.logs().join(format!("{name}.log"));
    let tail = fs::read_to_string(&log)
        .map(|text| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(5)..].join("\n")
        })
        .unwrap_or_default();
    Some(format!(
        "{name} exited; last lines of {}:\n{tail}",
        log.display()
    ))
}

fn node_manifest(index: u32) -> String {
    let name = format!("kwok-node-{index}");
    let address = format!("{NODE_NETWORK}.{}", index + 1);
    format!(
        r#"apiVersion: v1
kind: Node
metadata:
  name: {name}
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: {name}
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
status:
  addresses:
  - type: InternalIP
    address: {address}
  allocatable:
    cpu: "32"
    memory: 256Gi
    pods: "110"
  capacity:
    cpu: "32"
    memory: 256Gi
    pods: "110"
"#
    )
}

/// Whether the cluster runs and its apiserver is ready.
pub fn is_up(layout: &ClusterLayout) -> bool {
    netns_exists() && kubectl(layout, &["get", "--raw", "/readyz"]).is_some()
}

/// Starts the control plane with `nodes` fake nodes, and with `real_node` a real one (see
/// [`super::node`]). Does nothing if it already runs.
pub fn up(layout: &ClusterLayout, nodes: u32, real_node: bool) -> Result<()> {
    if netns_exists() {
        if is_up(layout) {
            println!("the local cluster is already up; `cargo xtask cluster down` stops it");
            return Ok(());
        }
        bail!(
            "network namespace {NETNS} exists but the apiserver does not answer; run `cargo xtask cluster down` first"
        );
    }
    let bin = if real_node {
        build::build_node()?
    } else {
        build::build()?
    };
    let started = Instant::now();
    // Components append to their logs (a restart keeps the earlier part); a new cluster starts
    // with empty ones.
    let _ = fs::remove_dir_all(layout.logs());
    for dir in [layout.logs(), layout.pids()] {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = fs::remove_dir_all(layout.etcd_data());
    let pki_dir = layout.pki();
    pki::ensure(&pki_dir, ADVERTISE_ADDRESS, SERVICE_IP)?;
    fs::write(
        layout.kubeconfig(),
        pki::admin_kubeconfig(&pki_dir, APISERVER_URL),
    )
    .context("writing kubeconfig")?;
    println!(
        "starting the local control plane in network namespace {NETNS} (logs in {})",
        layout.logs().display()
    );
    create_netns()?;

    let mut result = start_components(layout, &bin, nodes);
    if real_node && result.is_ok() {
        result = super::node::start(layout, &bin);
    }
    if let Err(err) = result {
        let failures: Vec<String> = COMPONENTS
            .iter()
            .filter_map(|c| component_failed(layout, c))
            .collect();
        let _ = down(layout);
        if failures.is_empty() {
            return Err(err);
        }
        bail!("{err:#}\n{}", failures.join("\n"));
    }
    println!(
        "cluster up in {:.0} s with {nodes} fake nodes{}",
        started.elapsed().as_secs_f64(),
        if real_node {
            format!(" and the real node {}", super::node::NODE_NAME)
        } else {
            String::new()
        }
    );
    print!("{}", layout.env_script());
    Ok(())
}

/// Starts kube-apiserver and waits until it is ready.
fn start_apiserver(layout: &ClusterLayout, bin: &Path) -> Result<()> {
    let pki = |f: &str| layout.pki().join(f).display().to_string();
    let admission_config = pki::webhook_admission_config(&layout.pki())?;
    spawn(
        layout,
        "kube-apiserver",
        &bin.join("kube-apiserver"),
        &[
            "--etcd-servers=http://127.0.0.1:2379".into(),
            format!("--advertise-address={ADVERTISE_ADDRESS}"),
            "--secure-port=6443".into(),
            format!("--tls-cert-file={}", pki("apiserver.crt")),
            format!("--tls-private-key-file={}", pki("apiserver.key")),
            format!("--client-ca-file={}", pki("ca.crt")),
            // `kubectl logs` and `exec` on the real node: kubelet authorizes the admin.
            format!("--kubelet-client-certificate={}", pki("admin.crt")),
            format!("--kubelet-client-key={}", pki("admin.key")),
            // Node names do not resolve in the namespace; their addresses are known.
            "--kubelet-preferred-address-types=InternalIP".into(),
            "--authorization-mode=Node,RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", pki("sa.pub")),
            format!("--service-account-signing-key-file={}", pki("sa.key")),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--allow-privileged=true".into(),
            // Webhooks with a service reference are dialled at the endpoint (pod) address.
            "--enable-aggregator-routing=true".into(),
            "--profiling=false".into(),
            format!(
                "--admission-control-config-file={}",
                admission_config.display()
            ),
        ],
    )?;
    wait_for("kube-apiserver", Duration::from_secs(90), || {
        component_failed(layout, "kube-apiserver").is_none()
            && kubectl(layout, &["get", "--raw", "/readyz"]).is_some()
    })
}

/// Kills kube-apiserver, leaves it down for `down`, and starts it again with the same
/// arguments and state (etcd keeps running): what a control-plane crash looks like to
/// clients. Fault tests use it to check that clients recover without a restart.
pub fn restart_apiserver(layout: &ClusterLayout, down: Duration) -> Result<()> {
    if !is_up(layout) {
        bail!("the local cluster is not up; `cargo xtask cluster up` starts it");
    }
    let bin = build::build()?;
    let pid = pid_of(layout, "kube-apiserver").context("no pid file for kube-apiserver")?;
    let stopped = Instant::now();
    // Killed, not terminated: a graceful shutdown drains long-running watches for up to a
    // minute, and clients should cope with an apiserver that vanishes.
    signal_group(pid, "-KILL");
    wait_for("kube-apiserver gone", Duration::from_secs(10), || {
        !is_running(pid)
    })?;
    sleep(down.saturating_sub(stopped.elapsed()));
    println!(
        "  kube-apiserver down for {:.1} s",
        stopped.elapsed().as_secs_f64()
    );
    start_apiserver(layout, &bin)?;
    println!(
        "  kube-apiserver back after {:.1} s",
        stopped.elapsed().as_secs_f64()
    );
    Ok(())
}

fn start_components(layout: &ClusterLayout, bin: &Path, nodes: u32) -> Result<()> {
    let pki = |f: &str| layout.pki().join(f).display().to_string();
    let kubeconfig = layout.kubeconfig().display().to_string();
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    spawn(
        layout,
        "etcd",
        &bin.join("etcd"),
        &[
            format!("--data-dir={}", layout.etcd_data().display()),
            "--listen-client-urls=http://127.0.0.1:2379".into(),
            "--advertise-client-urls=http://127.0.0.1:2379".into(),
            "--listen-peer-urls=http://127.0.0.1:2380".into(),
            "--initial-advertise-peer-urls=http://127.0.0.1:2380".into(),
            "--initial-cluster=default=http://127.0.0.1:2380".into(),
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ],
    )?;
    wait_for("etcd", Duration::from_secs(30), || {
        component_failed(layout, "etcd").is_none()
            && in_netns_output("curl", &["-sf", "http://127.0.0.1:2379/health"]).is_some()
    })?;

    start_apiserver(layout, bin)?;

    spawn(
        layout,
        "kube-controller-manager",
        &bin.join("kube-controller-manager"),
        &[
            format!("--kubeconfig={kubeconfig}"),
            "--leader-elect=false".into(),
            "--bind-address=127.0.0.1".into(),
            format!("--service-account-private-key-file={}", pki("sa.key")),
            format!("--root-ca-file={}", pki("ca.crt")),
            "--use-service-account-credentials=false".into(),
        ],
    )?;
    spawn(
        layout,
        "kube-scheduler",
        &bin.join("kube-scheduler"),
        &args(&[
            &format!("--kubeconfig={kubeconfig}"),
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
        ]),
    )?;
    spawn(
        layout,
        "kwok",
        &bin.join("kwok"),
        &[
            format!("--kubeconfig={kubeconfig}"),
            "--manage-all-nodes=false".into(),
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".into(),
            format!("--cidr={POD_CIDR}"),
            format!("--node-ip={ADVERTISE_ADDRESS}"),
            "--node-lease-duration-seconds=40".into(),
            "--server-address=127.0.0.1:10247".into(),
            format!("--config={}", build::stages_file().display()),
        ],
    )?;

    let manifests: String = (0..nodes)
        .map(|i| format!("---\n{}", node_manifest(i)))
        .collect();
    let nodes_file = layout.root.join("nodes.yaml");
    fs::write(&nodes_file, manifests).context("writing node manifests")?;
    let nodes_path = nodes_file.display().to_string();
    if nodes > 0 {
        wait_for("fake nodes registered", Duration::from_secs(30), || {
            kubectl(layout, &["apply", "-f", &nodes_path]).is_some()
        })?;
    }
    wait_for("nodes Ready and untainted", Duration::from_secs(120), || {
        for name in COMPONENTS {
            if component_failed(layout, name).is_some() {
                return false;
            }
        }
        let ready = kubectl(
            layout,
            &["get", "nodes", "-o", "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\" \"}{.spec.taints}{\"\\n\"}{end}"],
        );
        ready.is_some_and(|out| {
            let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
            lines.len() == nodes as usize && lines.iter().all(|l| l.trim() == "True")
        })
    })
    .map_err(|err| {
        let failed: Vec<String> = COMPONENTS.iter().filter_map(|c| component_failed(layout, c)).collect();
        if failed.is_empty() { err } else { anyhow::anyhow!("{err}\n{}", failed.join("\n")) }
    })?;
    wait_for("default service account", Duration::from_secs(60), || {
        kubectl(
            layout,
            &["get", "serviceaccount", "default", "-n", "default"],
        )
        .is_some()
    })
}

pub(super) fn signal_group(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", &format!("-{pid}")])
        .stderr(Stdio::null())
        .status();
}

/// Stops every component (and anything else left in the namespace) and removes it.
pub fn down(layout: &ClusterLayout) -> Result<()> {
    super::node::teardown(layout);
    let mut pids = Vec::new();
    for name in COMPONENTS.iter().rev() {
        if let Some(pid) = pid_of(layout, name) {
            signal_group(pid, "-TERM");
            pids.push(pid);
        }
        let _ = fs::remove_file(layout.pids().join(name));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|pid| is_running(*pid)) && Instant::now() < deadline {
        sleep(Duration::from_millis(100));
    }
    for pid in pids.iter().filter(|pid| is_running(**pid)) {
        signal_group(*pid, "-KILL");
    }
    if netns_exists() {
        // Webhook servers and other processes tests started inside the namespace.
        if let Ok(out) = Command::new("ip").args(["netns", "pids", NETNS]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        ip(&["netns", "del", NETNS])?;
    }
    let _ = fs::remove_dir_all(layout.etcd_data());
    println!(
        "local cluster stopped; logs kept in {}",
        layout.logs().display()
    );
    Ok(())
}

/// Prints the state of each component; fails if any is down.
pub fn status(layout: &ClusterLayout) -> Result<()> {
    if !netns_exists() {
        bail!(
            "the local cluster is not running (no network namespace {NETNS}); start it with `cargo xtask cluster up`"
        );
    }
    let mut problems = Vec::new();
    let node_components = if super::node::is_configured(layout) {
        super::node::COMPONENTS
    } else {
        &[]
    };
    for name in COMPONENTS.iter().chain(node_components) {
        match pid_of(layout, name) {
            Some(pid) if is_running(pid) => println!("{name:<24} running (pid {pid})"),
            _ => {
                println!(
                    "{name:<24} NOT RUNNING, see {}",
                    layout.logs().join(format!("{name}.log")).display()
                );
                problems.push(*name);
            }
        }
    }
    match kubectl(layout, &["get", "--raw", "/readyz"]) {
        Some(_) => println!("{:<24} ready", "apiserver /readyz"),
        None => {
            println!("{:<24} NOT READY", "apiserver /readyz");
            problems.push("apiserver readiness");
        }
    }
    if let Some(nodes) = kubectl(layout, &["get", "nodes", "--no-headers"]) {
        print!("{nodes}");
    }
    if !problems.is_empty() {
        bail!("unhealthy: {}", problems.join(", "));
    }
    Ok(())
}

/// Runs a command inside the namespace with the cluster's KUBECONFIG.
pub fn exec(layout: &ClusterLayout, command: &[String]) -> Result<()> {
    let kubeconfig = layout.kubeconfig();
    let status = Command::new("ip")
        .args(["netns", "exec", NETNS])
        .arg("env")
        .arg(format!("KUBECONFIG={}", kubeconfig.display()))
        .arg(format!(
            "KUBEWARDEN_TEST_KUBECONFIG={}",
            kubeconfig.display()
        ))
        .arg(format!("KUBEWARDEN_CLUSTER_NETNS={NETNS}"))
        .args(command)
        .status()
        .context("running the command in the network namespace")?;
    if !status.success() {
        bail!("{} exited with {status}", command.join(" "));
    }
    Ok(())
}
