//! `cargo xtask <command>`: the project's developer tasks. Run `cargo xtask --help`.

mod bench;
mod bench_audit;
mod bench_context;
mod bench_policies;
mod bench_reload;
mod bench_telemetry;
mod cargo;
mod certs;
mod chaos;
mod cluster;
mod crds;
mod demo;
mod e2e;
mod e2e_real_node;
mod fuzz;
mod go_tool;
mod helm;
mod images;
mod local_server;
mod memory;
mod paths;
mod policies;
mod preflight;
mod progress;
mod test;
mod tls_floor;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use paths::repo_root;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "Developer tasks of the Kubewarden-compatible policy engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write crds/*.yaml and the kubewarden-crds chart templates from crates/api-types.
    GenCrds {
        /// Do not write; fail if any file differs from what the types generate.
        #[arg(long)]
        check: bool,
    },
    /// Run the whole test suite, as CI does: fast tests, then the cluster tests on the local
    /// control plane (started and stopped around them unless it already runs).
    Test {
        /// Only the fast set (unit and in-process tests); no cluster.
        #[arg(long)]
        fast: bool,
    },
    /// The stack on the local control plane with a demo policy: one pod rejected, one
    /// admitted through the apiserver. `--server`: the policy-server alone over HTTPS instead.
    Demo {
        /// Run only the policy-server on a demo policy (seconds, no cluster, no root).
        #[arg(long)]
        server: bool,
    },
    /// Load-test the policy-server with wrk against its no-op baseline and, at one connection,
    /// a minimal HTTPS responder; cold start with 20 policies. Prints a table and writes
    /// target/bench/policy-server.md.
    Bench {
        /// What to measure: the policy-server under load; an audit-scanner run over
        /// `--resources` ConfigMaps with 5 policies on the local control plane; or
        /// context-aware policies with `--resources` ConfigMaps in the watch cache.
        #[arg(value_enum, default_value = "policy-server")]
        target: BenchTarget,
        /// Seconds per load run (policy-server).
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Resources to scan (audit) or to cache (context).
        #[arg(long, default_value_t = 10_000)]
        resources: u32,
        /// Also sweep the connection count (2 to 32) with alternating pairs of /noop and
        /// /validate/accept-all: throughput, ratio, server CPU and latency at each (policy-server).
        #[arg(long)]
        sweep: bool,
        /// Another policy-server binary (an earlier build, say) to run the real-world-like
        /// policies against too, in alternating runs (policy-server, policies).
        #[arg(long)]
        baseline: Option<std::path::PathBuf>,
    },
    /// Faults against the real policy-server under steady load: policies that loop, allocate
    /// without bound, trap and overflow their stack, and a certificate rotation. Fails if a
    /// fault is not contained or a healthy request is lost; writes target/bench/chaos.md.
    Chaos {
        /// Seconds of load.
        #[arg(long, default_value_t = 20)]
        seconds: u32,
        /// Use the debug build of the policy-server (what the test run has built already).
        #[arg(long)]
        debug: bool,
    },
    /// Run every cargo-fuzz target in fuzz/ for a bounded time (needs cargo-fuzz).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u32,
    },
    /// Build the test policies in policies/ and write the annotated fixtures.
    Policies,
    /// Run the end-to-end scenarios: on the local control plane (controller and policy-servers
    /// as local processes), or with --kind on a kind cluster (images, charts); logs in
    /// target/e2e-logs/.
    E2e {
        /// Build the images, load them into kind, install the charts and run there (needs
        /// Docker and kind).
        #[arg(long, conflicts_with = "real_node")]
        kind: bool,
        /// Build the images with buildah, start the local control plane with a real node
        /// (kubelet + containerd), install the charts with helm and run there.
        #[arg(long)]
        real_node: bool,
    },
    /// Build the controller and policy-server images from the Dockerfiles: with Docker or
    /// Podman, or without a daemon with buildah from release binaries cargo builds here.
    Images {
        #[arg(long, default_value = "ghcr.io")]
        registry: String,
        #[arg(long, default_value = "dev")]
        tag: String,
        /// Push after building.
        #[arg(long)]
        push: bool,
        #[arg(long, value_enum, default_value = "auto")]
        engine: images::Engine,
    },
    /// Run helm (built from its Go module into the cache the first time).
    Helm {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build, start, inspect and stop the local Kubernetes control plane.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BenchTarget {
    PolicyServer,
    /// Only the real-world-like policies and the memory with many modules (a part of
    /// `policy-server`).
    Policies,
    Audit,
    Context,
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report(&err);
            ExitCode::FAILURE
        }
    }
}

/// A failure in one line, its causes joined by `: ` (the first says what is missing and what
/// to do); the backtrace only when `RUST_BACKTRACE` asks for it.
fn report(err: &anyhow::Error) {
    let backtrace = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
    if backtrace {
        eprintln!("error: {err:?}");
    } else {
        eprintln!("error: {err:#}");
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::GenCrds { check } => crds::run(&repo_root(), check),
        Command::Test { fast } => test::run(fast),
        Command::Cluster(command) => cluster::run(command),
        Command::Policies => policies::run(&repo_root()),
        Command::Fuzz { seconds } => fuzz::run(&repo_root(), seconds),
        Command::Chaos { seconds, debug } => {
            chaos::run(&repo_root(), seconds, &local_server::build(!debug)?)
        }
        Command::Helm { args } => helm::exec(&args),
        Command::E2e {
            kind: false,
            real_node: false,
        } => e2e::run(),
        Command::E2e { kind: true, .. } => e2e::run_kind(&repo_root()),
        Command::E2e {
            real_node: true, ..
        } => e2e::run_real_node(),
        Command::Images {
            registry,
            tag,
            push,
            engine,
        } => images::run(&registry, &tag, push, engine),
        Command::Demo { server: true } => demo::run(&repo_root()),
        Command::Demo { server: false } => demo::run_cluster(),
        Command::Bench {
            target: BenchTarget::PolicyServer,
            seconds,
            sweep,
            baseline,
            ..
        } => bench::run(&repo_root(), seconds, sweep, baseline.as_deref()),
        Command::Bench {
            target: BenchTarget::Policies,
            seconds,
            baseline,
            ..
        } => bench_policies::run(&repo_root(), seconds, baseline.as_deref()),
        Command::Bench {
            target: BenchTarget::Audit,
            resources,
            ..
        } => bench_audit::run(&repo_root(), resources),
        Command::Bench {
            target: BenchTarget::Context,
            resources,
            seconds,
            ..
        } => bench_context::run(&repo_root(), resources, seconds),
    }
}
