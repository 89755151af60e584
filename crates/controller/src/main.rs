//! The Kubewarden controller.

use clap::Parser;

/// Kubernetes controller for Kubewarden custom resources.
///
/// Planned behaviour: reconcile every PolicyServer into a Deployment, Service, TLS Secret,
/// ConfigMap (`policies.yml`, `sources.yml`) and optional PodDisruptionBudget, with host
/// network mode support; track ClusterAdmissionPolicies, AdmissionPolicies and policy groups,
/// and register their Validating/MutatingWebhookConfigurations once every policy-server
/// replica serves them; rotate the CA and policy-server certificates.
///
/// This build is the project skeleton: the controller is not implemented yet.
#[derive(Debug, Parser)]
#[command(name = "kubewarden-controller", version)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("the controller is not implemented yet in this build; see README.md")
}
