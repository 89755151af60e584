//! A real node beside the control plane (`cargo xtask cluster up --real-node`): containerd with
//! runc, kubelet (cgroupfs driver), the CNI bridge, kube-proxy in iptables mode, CoreDNS, and
//! the OCI registry the node pulls the project's images from.
//!
//! Everything runs in the cluster's network namespace, so the node's address is the
//! apiserver's (`10.250.1.1`) and host-network pods bind there. containerd and kubelet enter
//! only that network namespace (`nsenter --net`), not the private mount namespace `ip netns
//! exec` makes: the volumes kubelet mounts must be visible to containerd, which bind-mounts
//! them into containers. Pods get addresses from [`POD_SUBNET`] on the `cni0` bridge.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::lifecycle::{
    ADVERTISE_ADDRESS, ClusterLayout, in_netns_output, is_running, kubectl, pid_of, signal_group,
    spawn_command, wait_for,
};
use super::{NETNS, pki};
use crate::images;

/// The node's name (and kubelet's hostname).
pub const NODE_NAME: &str = "kwrs-node";
/// Pod addresses on the real node, on the `cni0` bridge.
pub const POD_SUBNET: &str = "10.245.0.0/24";
/// The cluster DNS Service's address (kubelet's `clusterDNS`).
pub const DNS_SERVICE_IP: &str = "10.96.0.10";
/// The registry the node pulls from, on the node's address, over plain HTTP.
pub const REGISTRY: &str = "10.250.1.1:5000";
/// The pod sandbox image, built here (see `pause.c`) and pushed to [`REGISTRY`].
pub const PAUSE_IMAGE: &str = "10.250.1.1:5000/kubewarden-rs/pause:3.10";

/// Node components in start order.
pub const COMPONENTS: &[&str] = &["registry", "containerd", "kubelet", "kube-proxy", "coredns"];

/// Where the node keeps its state, below the cluster's directory.
struct NodeLayout {
    root: PathBuf,
}

impl NodeLayout {
    fn new(cluster: &ClusterLayout) -> Self {
        NodeLayout {
            root: cluster.root.join("node"),
        }
    }
    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }
    fn containerd_socket(&self) -> PathBuf {
        self.path("containerd/containerd.sock")
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// Whether this cluster was started with a real node.
pub fn is_configured(cluster: &ClusterLayout) -> bool {
    NodeLayout::new(cluster)
        .path("kubelet/config.yaml")
        .is_file()
}

/// Starts the node's components, pushes the sandbox image and waits until the node is Ready
/// and cluster DNS answers.
pub fn start(cluster: &ClusterLayout, bin: &Path) -> Result<()> {
    let node = NodeLayout::new(cluster);
    // A previous node's state (containers, volumes) does not belong to the new cluster.
    teardown(cluster);
    // Never delete through a mount point: a hostPath volume may be bound there.
    let left = mount_points_below(&node.root);
    if !left.is_empty() {
        bail!(
            "cannot clear {}: still mounted there: {}",
            node.root.display(),
            left.join(", ")
        );
    }
    let _ = fs::remove_dir_all(&node.root);
    for dir in [
        "containerd",
        "cni/net.d",
        "kubelet/root",
        "kubelet/pki",
        "kubelet/pod-logs",
        "registry",
    ] {
        fs::create_dir_all(node.path(dir))?;
    }
    let pki_dir = cluster.pki();
    pki::issue(
        &pki_dir,
        "kubelet",
        &format!("/CN=system:node:{NODE_NAME}/O=system:nodes"),
        "extendedKeyUsage=clientAuth",
    )?;
    pki::issue(
        &pki_dir,
        "kube-proxy",
        "/CN=system:kube-proxy",
        "extendedKeyUsage=clientAuth",
    )?;
    let server = "https://127.0.0.1:6443";
    fs::write(
        node.path("kubelet/kubeconfig"),
        pki::kubeconfig(&pki_dir, server, "kubelet"),
    )?;
    fs::write(
        node.path("kube-proxy.kubeconfig"),
        pki::kubeconfig(&pki_dir, server, "kube-proxy"),
    )?;
    network_settings()?;
    prepare_cgroup_root()?;

    start_registry(cluster, &node)?;
    push_pause_image(bin)?;
    start_containerd(cluster, &node)?;
    start_kubelet(cluster, &node, bin)?;
    spawn_command(
        cluster,
        "kube-proxy",
        in_network(&bin.join("kube-proxy")).args([
            format!(
                "--kubeconfig={}",
                display(&node.path("kube-proxy.kubeconfig"))
            ),
            format!("--hostname-override={NODE_NAME}"),
            "--proxy-mode=iptables".into(),
            "--cluster-cidr=10.245.0.0/16".into(),
            // The conntrack table size is a machine-wide setting: left alone.
            "--conntrack-max-per-core=0".into(),
            "--metrics-bind-address=127.0.0.1:10249".into(),
            "--healthz-bind-address=127.0.0.1:10256".into(),
        ]),
    )?;
    start_dns(cluster, &node, bin)?;
    wait_for("real node Ready", Duration::from_secs(120), || {
        failed_component(cluster).is_none()
            && kubectl(
                cluster,
                &[
                    "get",
                    "node",
                    NODE_NAME,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ],
            )
            .is_some_and(|status| status.trim() == "True")
    })
    .map_err(|err| with_failures(cluster, err))
}

fn failed_component(cluster: &ClusterLayout) -> Option<String> {
    COMPONENTS
        .iter()
        .find_map(|name| super::lifecycle::component_failed(cluster, name))
}

fn with_failures(cluster: &ClusterLayout, err: anyhow::Error) -> anyhow::Error {
    match failed_component(cluster) {
        Some(failure) => anyhow::anyhow!("{err}\n{failure}"),
        None => err,
    }
}

/// A command that runs `program` in the cluster's network namespace and the machine's mount
/// namespace.
fn in_network(program: &Path) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/run/netns/{NETNS}"))
        .arg("--")
        .arg(program);
    command
}

fn in_netns(args: &[&str]) -> Result<()> {
    let output = Command::new("ip")
        .args(["netns", "exec", NETNS])
        .args(args)
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "`{}` in the network namespace failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Forwarding, and bridged pod traffic through iptables (Service addresses between pods on the
/// same bridge); both are per network namespace.
fn network_settings() -> Result<()> {
    for setting in [
        "net.ipv4.ip_forward=1",
        "net.bridge.bridge-nf-call-iptables=1",
        "net.ipv4.conf.all.route_localnet=1",
    ] {
        in_netns(&["sysctl", "-q", "-w", setting]).context(
            "the real node needs bridge netfilter (kernel module br_netfilter) in the network \
             namespace",
        )?;
    }
    Ok(())
}

fn start_registry(cluster: &ClusterLayout, node: &NodeLayout) -> Result<()> {
    let config = node.path("registry/config.yml");
    fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {REGISTRY}\n",
            display(&node.path("registry/data"))
        ),
    )?;
    spawn_command(
        cluster,
        "registry",
        in_network(Path::new("/usr/bin/docker-registry"))
            .arg("serve")
            .arg(&config),
    )?;
    wait_for("registry", Duration::from_secs(20), || {
        super::lifecycle::component_failed(cluster, "registry").is_none()
            && in_netns_output("curl", &["-sf", &format!("http://{REGISTRY}/v2/")]).is_some()
    })
}

/// Builds the pause image (a static binary from `pause.c`, nothing else) and pushes it.
fn push_pause_image(bin: &Path) -> Result<()> {
    let local = "localhost/kubewarden-rs/pause:3.10";
    if !images::buildah_has(local) {
        let rootfs = bin.join("pause-rootfs");
        let _ = fs::remove_dir_all(&rootfs);
        fs::create_dir_all(&rootfs)?;
        fs::copy(bin.join("pause"), rootfs.join("pause"))?;
        images::commit_rootfs(
            local,
            &rootfs,
            &["--entrypoint", "[\"/pause\"]", "--user", "65535:65535"],
        )?;
        let _ = fs::remove_dir_all(&rootfs);
    }
    push_in_netns(local, PAUSE_IMAGE)
}

/// Pushes a buildah image to the node's registry (only reachable in the network namespace).
pub fn push_in_netns(image: &str, destination: &str) -> Result<()> {
    let mut push = Command::new("ip");
    push.args(["netns", "exec", NETNS])
        .arg(images::buildah().get_program())
        .args(images::buildah().get_args())
        .args(["push", "--quiet", "--tls-verify=false", image])
        .arg(format!("docker://{destination}"));
    crate::progress::run_captured("  ", &format!("pushing {destination}"), &mut push)?;
    Ok(())
}

fn start_containerd(cluster: &ClusterLayout, node: &NodeLayout) -> Result<()> {
    let certs = node.path(&format!("containerd/certs.d/{REGISTRY}"));
    fs::create_dir_all(&certs)?;
    fs::write(
        certs.join("hosts.toml"),
        format!(
            "server = \"http://{REGISTRY}\"\n\n[host.\"http://{REGISTRY}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )?;
    fs::write(
        node.path("cni/net.d/10-kwrs.conflist"),
        format!(
            r#"{{"cniVersion": "0.4.0", "name": "kwrs", "plugins": [
  {{"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
    "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "{POD_SUBNET}"}}]],
             "routes": [{{"dst": "0.0.0.0/0"}}], "dataDir": "{ipam}"}}}},
  {{"type": "portmap", "capabilities": {{"portMappings": true}}}}
]}}
"#,
            ipam = display(&node.path("cni/ipam"))
        ),
    )?;
    let config = node.path("containerd/config.toml");
    fs::write(
        &config,
        format!(
            r#"version = 2
root = "{root}"
state = "{state}"

[grpc]
  address = "{socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # Without CAP_SYS_RESOURCE (as in this sandbox and many CI containers) runc cannot lower a
  # process's OOM score below its parent's; kubelet asks -998 for sandboxes.
  restrict_oom_score_adj = {restrict_oom}
  # Pod network namespaces below the node's state, not in the machine's /run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{certs_d}"
"#,
            root = display(&node.path("containerd/root")),
            state = display(&node.path("containerd/state")),
            socket = display(&node.containerd_socket()),
            opt = display(&node.path("containerd/opt")),
            cni_bin = crate::preflight::CNI_BIN_DIR,
            cni_conf = display(&node.path("cni/net.d")),
            certs_d = display(&node.path("containerd/certs.d")),
            restrict_oom = !has_capability(CAP_SYS_RESOURCE),
        ),
    )?;
    spawn_command(
        cluster,
        "containerd",
        in_network(Path::new("containerd"))
            .arg("--config")
            .arg(&config),
    )?;
    let socket = node.containerd_socket();
    wait_for("containerd", Duration::from_secs(30), || {
        super::lifecycle::component_failed(cluster, "containerd").is_none() && socket.exists()
    })
}

const CAP_SYS_RESOURCE: u32 = 24;

/// Whether this process holds a capability (read from /proc; assumed held when unreadable).
fn has_capability(capability: u32) -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_none_or(|caps| caps & (1 << capability) != 0)
}

fn start_kubelet(cluster: &ClusterLayout, node: &NodeLayout, bin: &Path) -> Result<()> {
    // Pods with `dnsPolicy: Default` and host-network pods resolve through CoreDNS too: the
    // machine's own resolver is not reachable from the namespace.
    fs::write(
        node.path("kubelet/resolv.conf"),
        format!("nameserver {ADVERTISE_ADDRESS}\n"),
    )?;
    let config = node.path("kubelet/config.yaml");
    fs::write(
        &config,
        format!(
            r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: /{CGROUP_ROOT}
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://{socket}
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {ca}
authorization:
  mode: Webhook
clusterDomain: cluster.local
clusterDNS: [{DNS_SERVICE_IP}]
resolvConf: {resolv}
podLogsDir: {pod_logs}
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
"#,
            socket = display(&node.containerd_socket()),
            ca = display(&cluster.pki().join("ca.crt")),
            resolv = display(&node.path("kubelet/resolv.conf")),
            pod_logs = display(&node.path("kubelet/pod-logs")),
        ),
    )?;
    spawn_command(
        cluster,
        "kubelet",
        in_network(&bin.join("kubelet")).args([
            format!("--config={}", display(&config)),
            format!("--kubeconfig={}", display(&node.path("kubelet/kubeconfig"))),
            format!("--root-dir={}", display(&node.path("kubelet/root"))),
            format!("--cert-dir={}", display(&node.path("kubelet/pki"))),
            format!("--hostname-override={NODE_NAME}"),
            format!("--node-ip={ADVERTISE_ADDRESS}"),
            "--v=1".into(),
        ]),
    )
}

/// CoreDNS answers for the cluster domain on the node's address; the `kube-dns` Service (at
/// [`DNS_SERVICE_IP`]) points there through an EndpointSlice. No upstream: names outside the
/// cluster fail at once instead of leaving the namespace.
fn start_dns(cluster: &ClusterLayout, node: &NodeLayout, bin: &Path) -> Result<()> {
    let corefile = node.path("Corefile");
    fs::write(
        &corefile,
        format!(
            ".:53 {{\n    bind {ADVERTISE_ADDRESS}\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n        kubeconfig {kubeconfig} local\n        pods insecure\n        fallthrough in-addr.arpa ip6.arpa\n    }}\n    cache 30\n}}\n",
            kubeconfig = display(&cluster.kubeconfig())
        ),
    )?;
    spawn_command(
        cluster,
        "coredns",
        in_network(&bin.join("coredns")).arg("-conf").arg(&corefile),
    )?;
    let manifest = node.path("kube-dns.yaml");
    fs::write(
        &manifest,
        format!(
            r#"apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
spec:
  clusterIP: {DNS_SERVICE_IP}
  ports:
  - {{name: dns, port: 53, protocol: UDP}}
  - {{name: dns-tcp, port: 53, protocol: TCP}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-node
  namespace: kube-system
  labels:
    kubernetes.io/service-name: kube-dns
addressType: IPv4
endpoints:
- addresses: [{ADVERTISE_ADDRESS}]
  conditions:
    ready: true
ports:
- {{name: dns, port: 53, protocol: UDP}}
- {{name: dns-tcp, port: 53, protocol: TCP}}
"#
        ),
    )?;
    let manifest = display(&manifest);
    // Commands run with `ip netns exec` (kubectl, the e2e scenarios) resolve through the
    // Service too.
    let resolv = netns_resolv_conf();
    fs::create_dir_all(resolv.parent().context("resolv.conf directory")?)?;
    fs::write(
        &resolv,
        format!("nameserver {DNS_SERVICE_IP}\nsearch svc.cluster.local cluster.local\n"),
    )?;
    wait_for("cluster DNS Service", Duration::from_secs(30), || {
        kubectl(cluster, &["apply", "-f", &manifest]).is_some()
    })?;
    wait_for("CoreDNS answering", Duration::from_secs(60), || {
        super::lifecycle::component_failed(cluster, "coredns").is_none()
            && in_netns_output("getent", &["hosts", "kubernetes.default.svc.cluster.local"])
                .is_some()
    })
}

/// `ip netns exec` mounts this over /etc/resolv.conf.
fn netns_resolv_conf() -> PathBuf {
    PathBuf::from("/etc/netns").join(NETNS).join("resolv.conf")
}

/// Stops the node: kubelet first (so it restarts nothing), then every pod's processes, then
/// containerd; unmounts what kubelet and containerd mounted (the pods' network namespaces
/// too) and removes the node's cgroups. Touches nothing outside the node's own directory,
/// cgroups and processes. Safe to call when no node runs.
pub fn teardown(cluster: &ClusterLayout) {
    let node = NodeLayout::new(cluster);
    for name in ["kubelet", "kube-proxy", "coredns"] {
        stop(cluster, name);
    }
    kill_pod_processes(&node);
    for name in ["containerd", "registry"] {
        stop(cluster, name);
    }
    unmount_below(&node.root);
    remove_cgroup_root();
    let _ = fs::remove_file(netns_resolv_conf());
    // What `is_configured` reads: a cluster started later without a real node has none. The
    // rest stays until the next start, which removes it once nothing is mounted there.
    let _ = fs::remove_file(node.path("kubelet/config.yaml"));
}

fn stop(cluster: &ClusterLayout, name: &str) {
    if let Some(pid) = pid_of(cluster, name) {
        signal_group(pid, "-TERM");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while is_running(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if is_running(pid) {
            signal_group(pid, "-KILL");
        }
    }
    let _ = fs::remove_file(cluster.root.join("pids").join(name));
}

/// Every pod of the node lives below this cgroup in each hierarchy, so that stopping the node
/// touches nothing of another kubelet's on the machine.
const CGROUP_ROOT: &str = "kubewarden-rs";

/// Mount points of the machine's cgroup hierarchies (v1 and v2).
fn cgroup_mounts() -> Vec<PathBuf> {
    let Ok(mounts) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    mounts
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            let point = left.split(' ').nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(point))
        })
        .collect()
}

/// Creates [`CGROUP_ROOT`] in every hierarchy (kubelet requires its cgroup root to exist), with
/// the parent's CPUs and memory nodes in cpuset (a new v1 cpuset starts with none) and the
/// parent's controllers enabled below it on v2.
fn prepare_cgroup_root() -> Result<()> {
    for mount in cgroup_mounts() {
        let dir = mount.join(CGROUP_ROOT);
        fs::create_dir_all(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
        for inherited in ["cpuset.cpus", "cpuset.mems", "cgroup.subtree_control"] {
            let (Ok(parent), Ok(own)) = (
                fs::read_to_string(mount.join(inherited)),
                fs::read_to_string(dir.join(inherited)),
            ) else {
                continue;
            };
            if !own.trim().is_empty() || parent.trim().is_empty() {
                continue;
            }
            let value = if inherited == "cgroup.subtree_control" {
                parent
                    .split_whitespace()
                    .map(|controller| format!("+{controller}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                parent.trim().to_string()
            };
            fs::write(dir.join(inherited), value)
                .with_context(|| format!("writing {inherited} of {}", dir.display()))?;
        }
    }
    Ok(())
}

/// Removes what is left of the node's cgroups once no process is in them, deepest first.
fn remove_cgroup_root() {
    fn remove_below(dir: &Path) {
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_below(&entry.path());
                }
            }
        }
        let _ = fs::remove_dir(dir);
    }
    for mount in cgroup_mounts() {
        remove_below(&mount.join(CGROUP_ROOT));
    }
}

/// Processes in the node's pod cgroups (containers and their shims' children).
fn kill_pod_processes(node: &NodeLayout) {
    let Ok(entries) = fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let in_pod = fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .is_ok_and(|cgroups| cgroups.contains(&format!("/{CGROUP_ROOT}/")));
        if in_pod {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
    // containerd's shims outlive containerd; this node's are those given its socket.
    let _ = Command::new("pkill")
        .args(["-KILL", "-f"])
        .arg(format!(
            "containerd-shim-runc-v2 .*-address {}",
            display(&node.containerd_socket())
        ))
        .status();
}

/// Mount points at or below `root`, deepest first.
fn mount_points_below(root: &Path) -> Vec<String> {
    let Ok(mounts) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let root = display(root);
    let below = format!("{root}/");
    let mut points: Vec<String> = mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| *point == root || point.starts_with(&below))
        .map(str::to_string)
        .collect();
    points.sort_by_key(|point| std::cmp::Reverse(point.len()));
    points
}

/// Unmounts every mount point below `root`, deepest first.
fn unmount_below(root: &Path) {
    for point in mount_points_below(root) {
        let _ = Command::new("umount").args(["-l", &point]).status();
    }
}
