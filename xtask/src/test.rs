//! `cargo xtask test`: the project's test command, as run by CI.
//!
//! First the fast set (`cargo test --workspace`: unit and in-process tests, seconds; tests
//! that need a cluster skip themselves). Then, unless `--fast`, the cluster set: every test
//! target named `cluster_*`, run inside the local control plane's network namespace with
//! `KUBEWARDEN_REQUIRE_CLUSTER=1` (a missing cluster fails instead of skipping), and the
//! end-to-end scenarios (`cargo xtask e2e`) on the same cluster.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cluster::{self, ClusterLayout, NETNS};
use crate::helm;

/// Runs a command, echoing it first, and fails with its exit status.
pub fn run_step(description: &str, command: &mut Command) -> Result<()> {
    println!("==> {description}");
    let status = command
        .status()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{description} failed ({status})");
    }
    Ok(())
}

fn cargo_path() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Load seconds of the fault suite in the full test run (`cargo xtask chaos` runs longer).
const CHAOS_SECONDS: u32 = 6;

pub fn run(fast_only: bool) -> Result<()> {
    // Chart tests need helm: the full run builds it (once); the fast run uses it if present.
    let helm = if fast_only {
        helm::ensure_if_present()
    } else {
        Some(helm::ensure()?)
    };
    crate::crds::run(&crate::repo_root(), true)
        .context("the CRD manifests differ from the types; run `cargo xtask gen-crds`")?;
    let mut fast = Command::new(cargo_path());
    fast.args(["test", "--workspace", "--locked"]);
    if let Some(helm) = &helm {
        fast.env(helm::HELM_ENV, helm);
    }
    if !fast_only {
        // The full run must not skip the tests that start local servers (OCI registry).
        fast.env("KUBEWARDEN_REQUIRE_TEST_SERVERS", "1");
    }
    run_step(
        "fast tests: unit, in-process and local-server tests (cluster tests skip themselves here)",
        &mut fast,
    )?;
    if fast_only {
        return Ok(());
    }
    println!("==> faults under load (cargo xtask chaos, short)");
    crate::chaos::run(&crate::repo_root(), CHAOS_SECONDS, true)?;
    let layout = ClusterLayout::default_location();
    println!("==> local control plane");
    let already_up = cluster::is_up(&layout);
    if !already_up {
        cluster::up(&layout, 3).context("starting the local control plane (needs root for the network namespace and Go to build it)")?;
    }
    let kubeconfig = layout.kubeconfig();
    let result = run_step(
        "cluster tests (test targets named cluster_*)",
        Command::new("ip")
            .args(["netns", "exec", NETNS, "env"])
            .arg(format!(
                "KUBEWARDEN_TEST_KUBECONFIG={}",
                kubeconfig.display()
            ))
            .arg("KUBEWARDEN_REQUIRE_CLUSTER=1")
            // Fault tests restart control-plane components through this binary.
            .arg(format!(
                "KUBEWARDEN_XTASK={}",
                std::env::current_exe()
                    .context("the xtask binary's path")?
                    .display()
            ))
            .arg(format!(
                "{}={}",
                helm::HELM_ENV,
                helm.as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ))
            .arg(cargo_path())
            .args(["test", "--workspace", "--locked", "--test", "cluster_*"]),
    );
    if result.is_err() {
        println!(
            "component logs of the local control plane: {}",
            layout.logs().display()
        );
    }
    // The end-to-end journey on the same cluster (`cargo xtask e2e`).
    let result = result.and_then(|()| {
        println!("==> end-to-end scenarios (cargo xtask e2e)");
        crate::e2e::run(&crate::repo_root())
    });
    if !already_up {
        cluster::down(&layout)?;
    }
    result
}
