//! Harness of the end-to-end scenarios (`cargo xtask e2e`).
//!
//! In **local** mode (the local control plane: kwok pods, no kubelet) the stack runs as local
//! processes inside the cluster's network namespace: the controller binary, and for every
//! PolicyServer one real policy-server process that [`LocalPolicyServers`] starts with the
//! configuration and certificate the controller wrote, on the ports the PolicyServer's
//! host-network pods declare — the apiserver reaches it through the real Service and
//! EndpointSlice. In **kind** mode the charts installed the stack and real pods run it; in
//! **real-node** mode too, on the local control plane's real node (kubelet and containerd),
//! with the controller in host network mode.

mod local;
pub mod tls_probe;

pub use local::{LocalPolicyServers, Processes, start_controller};

use std::path::PathBuf;

/// Which cluster the scenarios run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Local,
    Kind,
    RealNode,
}

/// Namespace of the stack in every mode (the charts' default).
pub const NAMESPACE: &str = "kubewarden";

impl Mode {
    /// From `KUBEWARDEN_E2E_MODE` (`local`, `kind` or `real-node`); `None` when unset (not run
    /// by xtask).
    pub fn from_env() -> Option<Mode> {
        match std::env::var("KUBEWARDEN_E2E_MODE").ok()?.as_str() {
            "kind" => Some(Mode::Kind),
            "real-node" => Some(Mode::RealNode),
            _ => Some(Mode::Local),
        }
    }

    /// Whether the charts installed the stack and pods run it (not local processes).
    pub fn runs_in_pods(self) -> bool {
        self != Mode::Local
    }
}

/// Whether the charts installed the controller in host network mode
/// (`KUBEWARDEN_E2E_HOST_NETWORK=true`; local mode always runs it so).
pub fn host_network_mode() -> bool {
    std::env::var("KUBEWARDEN_E2E_HOST_NETWORK").is_ok_and(|v| v == "true")
}

/// Whether the charts installed the controller with `mTLS.enable`
/// (`KUBEWARDEN_E2E_MTLS=true`): the apiserver and the audit-scanner must present client
/// certificates to policy-servers.
pub fn mtls_mode() -> bool {
    std::env::var("KUBEWARDEN_E2E_MTLS").is_ok_and(|v| v == "true")
}

/// The policy-server image of the PolicyServers the scenarios create
/// (`KUBEWARDEN_E2E_POLICY_SERVER_IMAGE`; kind mode loads `ghcr.io/...:e2e`).
pub fn policy_server_image() -> String {
    std::env::var("KUBEWARDEN_E2E_POLICY_SERVER_IMAGE")
        .ok()
        .filter(|image| !image.is_empty())
        .unwrap_or_else(|| "ghcr.io/kubewarden-rs/policy-server:e2e".to_string())
}

/// Directory of the binaries under test (`KUBEWARDEN_E2E_BIN_DIR`), which `cargo xtask e2e`
/// and `cargo xtask demo` set to where cargo built them.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    std::env::var_os(BIN_DIR_ENV)
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{BIN_DIR_ENV} is not set: run this through `cargo xtask e2e` or `cargo xtask \
                 demo`, which build the controller, policy-server and audit-scanner and set it"
            )
        })
}

/// Names the directory of the binaries under test.
pub const BIN_DIR_ENV: &str = "KUBEWARDEN_E2E_BIN_DIR";

/// A binary of the stack in [`bin_dir`], or an error naming the path that is missing.
pub fn stack_binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if !path.is_file() {
        anyhow::bail!(
            "{} does not exist ({BIN_DIR_ENV} points to where it should be): build it with \
             `cargo build -p {name}`, or run through `cargo xtask e2e` / `cargo xtask demo`",
            path.display()
        );
    }
    Ok(path)
}

/// Where logs of every component go (`KUBEWARDEN_E2E_LOG_DIR`, set by xtask below cargo's
/// target directory; a temporary directory otherwise).
pub fn log_dir() -> PathBuf {
    let dir = std::env::var_os("KUBEWARDEN_E2E_LOG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("kubewarden-rs-e2e-logs"));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Base URL the test policies are served from to in-cluster policy-servers (kind mode), from
/// `KUBEWARDEN_E2E_FIXTURE_BASE`.
pub fn fixture_base() -> Option<String> {
    std::env::var("KUBEWARDEN_E2E_FIXTURE_BASE")
        .ok()
        .filter(|b| !b.is_empty())
}

/// A test policy module built from `policies/`: a `file://` URL the local policy-servers can
/// read, or in kind mode its URL on the in-cluster fixture server.
pub fn fixture_module(name: &str) -> String {
    if let Some(base) = fixture_base() {
        return format!("{}/{name}.wasm", base.trim_end_matches('/'));
    }
    let path = test_cluster::repo_root()
        .join("crates/policy-evaluator/tests/fixtures")
        .join(format!("{name}.wasm"));
    let path = path.canonicalize().unwrap_or(path);
    format!("file://{}", path.display())
}
