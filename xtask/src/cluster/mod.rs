//! `cargo xtask cluster`: a real Kubernetes control plane without Docker.
//!
//! kube-apiserver, kube-controller-manager, kube-scheduler and etcd are built from their Go
//! modules, kwok plays the kubelets. Everything runs inside a network namespace this command
//! creates, so the apiserver can call webhook servers that run as local processes: kwok gives
//! pods addresses from a range that is routed to the namespace's loopback, and the apiserver
//! (with `--enable-aggregator-routing`) dials Service endpoints directly.

pub(crate) mod build;
mod lifecycle;
pub mod node;
mod pki;

use anyhow::Result;
use clap::Subcommand;

pub use lifecycle::{
    ClusterLayout, apiserver_has_webhook_client_cert, down, exec, is_up, kubectl, up,
};

/// The Kubernetes release the control plane is built from.
pub const KUBERNETES_VERSION: &str = "1.34.4";
/// The kwok release that plays the kubelets.
pub const KWOK_VERSION: &str = "v0.8.0";
/// Name of the network namespace everything runs in.
pub const NETNS: &str = "kwrs";

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Build the control-plane binaries into the cache (minutes the first time, then reused).
    Build {
        /// Also build the test tools from their Go modules: helm (the chart tests) and the
        /// OpenTelemetry Collector (the telemetry tests).
        #[arg(long)]
        helm: bool,
        /// Also build the real node's binaries (kubelet, kube-proxy, CoreDNS, pause).
        #[arg(long)]
        node: bool,
    },
    /// Start the control plane with fake nodes inside the network namespace.
    Up {
        /// Number of fake (kwok) nodes [default: 3, or 0 with --real-node].
        #[arg(long)]
        nodes: Option<u32>,
        /// Also run a real node: containerd, kubelet, CNI bridge, kube-proxy, CoreDNS, and the
        /// registry it pulls images from.
        #[arg(long)]
        real_node: bool,
    },
    /// Stop every component and remove the network namespace.
    Down,
    /// Report which components run and whether the apiserver and nodes are ready.
    Status,
    /// Kill kube-apiserver, keep it down, and start it again (fault tests).
    RestartApiserver {
        /// Seconds the apiserver stays down.
        #[arg(long, default_value_t = 3)]
        down_seconds: u64,
    },
    /// Print the environment (KUBECONFIG, network namespace) to use the cluster.
    Env,
    /// Run a command inside the cluster's network namespace with KUBECONFIG set.
    Exec {
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
}

pub fn run(command: ClusterCommand) -> Result<()> {
    let layout = ClusterLayout::default_location();
    match command {
        ClusterCommand::Build { helm, node } => {
            if node {
                build::build_node()?;
            } else {
                build::build()?;
            }
            if helm {
                crate::helm::ensure()?;
                crate::go_tool::OTELCOL.ensure()?;
            }
            Ok(())
        }
        ClusterCommand::Up { nodes, real_node } => {
            if real_node {
                crate::preflight::require_real_node_tools()?;
            }
            let nodes = nodes.unwrap_or(if real_node { 0 } else { 3 });
            up(&layout, nodes, real_node)
        }
        ClusterCommand::Down => down(&layout),
        ClusterCommand::Status => lifecycle::status(&layout),
        ClusterCommand::RestartApiserver { down_seconds } => {
            lifecycle::restart_apiserver(&layout, std::time::Duration::from_secs(down_seconds))
        }
        ClusterCommand::Env => {
            print!("{}", layout.env_script());
            Ok(())
        }
        ClusterCommand::Exec { command } => lifecycle::exec(&layout, &command),
    }
}
