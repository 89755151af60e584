//! The audit-scanner.

use clap::Parser;

/// Evaluates the resources already in the cluster against the active policies and writes
/// the results as OpenReports (or wgpolicyk8s PolicyReports).
///
/// Planned behaviour: select the policies with background audit enabled, list the resources
/// they target page by page, send each one as a synthetic CREATE request to the
/// policy-server's `/audit/<policy-id>` endpoint, write one report per resource, then delete
/// the reports of earlier runs.
///
/// This build is the project skeleton: the scanner is not implemented yet.
#[derive(Debug, Parser)]
#[command(name = "audit-scanner", version)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("the audit-scanner is not implemented yet in this build; see README.md")
}
