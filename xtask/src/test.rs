//! `cargo xtask test`: the project's test command, as run by CI.
//!
//! First the fast set (`cargo test --workspace`: unit and in-process tests, seconds; tests
//! that need a cluster skip themselves). Then, unless `--fast`, the cluster set: every test
//! target named `cluster_*`, run inside the local control plane's network namespace with
//! `KUBEWARDEN_REQUIRE_CLUSTER=1` (a missing cluster fails instead of skipping), and the
//! end-to-end scenarios (`cargo xtask e2e`) on the same cluster.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::cluster::build::BackgroundBuild;
use crate::cluster::{self, ClusterLayout, NETNS};
use crate::helm;
use crate::progress::run_step;

/// Load seconds of the fault suite in the full test run (`cargo xtask chaos` runs longer).
const CHAOS_SECONDS: u32 = 6;

pub fn run(fast_only: bool) -> Result<()> {
    let started = Instant::now();
    if !fast_only {
        crate::preflight::require_test_tools()?;
        crate::preflight::require_real_node_tools()?;
    }
    crate::crds::run(&crate::paths::repo_root(), true)
        .context("the CRD manifests differ from the types; run `cargo xtask gen-crds`")?;
    // The full run builds the control plane and helm (for the chart tests) from Go while cargo
    // compiles the tests; the fast run uses helm if it was built before.
    let go = if fast_only {
        None
    } else {
        Some(BackgroundBuild::start(true, true)?)
    };
    // Every later step runs what this one build made (its binaries too), so nothing is built
    // again with another feature set.
    let tests = crate::cargo::build_tests("compiling the tests", &["--workspace"])?;
    if let Some(go) = go {
        go.wait()?;
    }
    let helm = if fast_only {
        helm::ensure_if_present()
    } else {
        Some(helm::ensure()?)
    };
    let otelcol = if fast_only {
        crate::go_tool::OTELCOL.existing()
    } else {
        Some(crate::go_tool::OTELCOL.ensure()?)
    };
    let mut fast = crate::cargo::command();
    fast.args(["test", "--workspace", "--locked"]);
    if let Some(helm) = &helm {
        fast.env(helm::HELM_ENV, helm);
    }
    if let Some(otelcol) = &otelcol {
        fast.env(crate::go_tool::OTELCOL_ENV, otelcol);
    }
    if !fast_only {
        // The full run must not skip the tests that start local servers (OCI registry,
        // OpenTelemetry Collector).
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
    crate::chaos::run(
        &crate::paths::repo_root(),
        CHAOS_SECONDS,
        tests.path("policy-server")?,
    )?;
    let layout = ClusterLayout::default_location();
    println!("==> local control plane");
    let already_up = cluster::is_up(&layout);
    if !already_up {
        cluster::up(&layout, 3, false).context("starting the local control plane (needs root for the network namespace and Go to build it)")?;
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
            .arg(format!(
                "KUBEWARDEN_POLICY_SERVER_BIN={}",
                tests.path("policy-server")?.display()
            ))
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
            .arg(format!(
                "{}={}",
                crate::go_tool::OTELCOL_ENV,
                otelcol
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ))
            .arg(crate::cargo::program())
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
        crate::e2e::run_scenarios(&crate::e2e::stack_dir(&tests)?, tests.test("e2e")?)
    });
    if !already_up {
        cluster::down(&layout)?;
    }
    result?;
    if already_up {
        println!(
            "==> skipped the real-node end-to-end run: it needs a cluster of its own and one you \
             started is up; `cargo xtask cluster down && cargo xtask e2e --real-node` runs it"
        );
    } else {
        println!("==> end-to-end scenarios on a real node (cargo xtask e2e --real-node)");
        crate::e2e_real_node::run(&crate::e2e::stack_dir(&tests)?, tests.test("e2e")?)?;
    }
    println!(
        "==> all tests passed in {}",
        crate::progress::elapsed(started.elapsed())
    );
    Ok(())
}
