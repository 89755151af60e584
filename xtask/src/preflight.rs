//! Checks made before a long task starts, so that a missing tool or privilege is named in one
//! line, with what to do, before anything is built.

use std::path::Path;

use anyhow::{Result, bail};

/// The CNI plugins (bridge, host-local, loopback, portmap) of Debian's
/// containernetworking-plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// A program a task runs, and the Debian package that provides it.
struct Tool {
    program: &'static str,
    package: &'static str,
}

const CLUSTER_TOOLS: &[Tool] = &[
    Tool {
        program: "go",
        package: "golang (Go ≥ 1.26)",
    },
    Tool {
        program: "ip",
        package: "iproute2",
    },
    Tool {
        program: "curl",
        package: "curl",
    },
    Tool {
        program: "openssl",
        package: "openssl",
    },
    Tool {
        program: "kubectl",
        package: "kubectl",
    },
];

/// What the full test run needs beyond the cluster's tools: a real OCI registry and the load
/// generator of the fault suite.
const TEST_TOOLS: &[Tool] = &[
    Tool {
        program: "docker-registry",
        package: "docker-registry",
    },
    Tool {
        program: "wrk",
        package: "wrk",
    },
];

/// What the real node runs beside the cluster's tools: the container runtime, the image builder,
/// the CNI plugins (checked by directory), kube-proxy's iptables, and the fixture server.
const REAL_NODE_TOOLS: &[Tool] = &[
    Tool {
        program: "containerd",
        package: "containerd",
    },
    Tool {
        program: "runc",
        package: "runc",
    },
    Tool {
        program: "buildah",
        package: "buildah",
    },
    Tool {
        program: "iptables",
        package: "iptables",
    },
    Tool {
        program: "nsenter",
        package: "util-linux",
    },
    Tool {
        program: "gcc",
        package: "gcc (and libc6-dev)",
    },
    Tool {
        program: "python3",
        package: "python3",
    },
    Tool {
        program: "docker-registry",
        package: "docker-registry",
    },
];

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program)))
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The error naming every missing tool and the packages to install, if any is missing.
fn require(tools: &[Tool]) -> Result<()> {
    let missing: Vec<&Tool> = tools.iter().filter(|t| !on_path(t.program)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let programs: Vec<&str> = missing.iter().map(|t| t.program).collect();
    let packages: Vec<&str> = missing.iter().map(|t| t.package).collect();
    bail!(
        "missing on PATH: {}; install them (Debian packages: {}) and run this again",
        programs.join(", "),
        packages.join(", ")
    )
}

/// Whether this process may create network namespaces (root, or CAP_SYS_ADMIN).
fn may_create_network_namespaces() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return true; // Cannot tell: let `ip netns add` say.
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
    };
    let effective_uid = field("Uid:").and_then(|v| v.split_whitespace().nth(1));
    const CAP_SYS_ADMIN: u32 = 21;
    let has_sys_admin = field("CapEff:")
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0);
    effective_uid == Some("0") || has_sys_admin
}

/// What `cargo xtask demo` and the cluster tests need: the tools, and root for the network
/// namespace.
pub fn require_cluster_tools() -> Result<()> {
    require(CLUSTER_TOOLS)?;
    if !may_create_network_namespaces() {
        bail!(
            "the local control plane runs in a network namespace it creates, which needs root: \
             run this as root, or `cargo xtask demo --server` for the policy-server alone"
        );
    }
    Ok(())
}

/// What `cargo xtask cluster up --real-node` and the real-node e2e need.
pub fn require_real_node_tools() -> Result<()> {
    require(REAL_NODE_TOOLS)?;
    if !Path::new(CNI_BIN_DIR).join("bridge").is_file() {
        bail!(
            "the CNI plugins are missing from {}; install them (Debian package: \
             containernetworking-plugins)",
            CNI_BIN_DIR
        );
    }
    require_cluster_tools()
}

/// What the full `cargo xtask test` needs.
pub fn require_test_tools() -> Result<()> {
    require(TEST_TOOLS)?;
    require_cluster_tools()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_missing_tool_and_its_package() {
        let tool = |program, package| Tool { program, package };
        assert!(require(&[tool("sh", "dash")]).is_ok());
        let err = require(&[
            tool("no-such-tool-a", "pkg-a"),
            tool("sh", "dash"),
            tool("no-such-tool-b", "pkg-b"),
        ])
        .expect_err("two are missing");
        assert_eq!(
            err.to_string(),
            "missing on PATH: no-such-tool-a, no-such-tool-b; install them (Debian packages: \
             pkg-a, pkg-b) and run this again"
        );
    }
}
