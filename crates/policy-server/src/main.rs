//! The policy-server: the HTTPS admission webhook that evaluates Kubewarden policies.

use clap::Parser;

/// HTTPS admission webhook server that evaluates Kubewarden WebAssembly policies.
///
/// Planned behaviour (upstream-compatible flags and environment variables): read
/// `policies.yml` and `sources.yml`, fetch each policy module once (file, https, OCI
/// registry), compile it, validate every policy's settings, then answer
/// `POST /validate/<policy-id>`, `/validate_raw/<policy-id>` and `/audit/<policy-id>` over
/// rustls on the webhook port, `/readiness` on its own port and Prometheus `/metrics`,
/// evaluating on a bounded pool of wasmtime workers.
///
/// This build is the project skeleton: the server is not implemented yet.
#[derive(Debug, Parser)]
#[command(name = "policy-server", version)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("the policy-server is not implemented yet in this build; see README.md")
}
