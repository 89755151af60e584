//! `kwctl scaffold manifest` and `kwctl scaffold verification-config`, as upstream's kwctl
//! writes them.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use api_types::crd::ContextAwareResource;
use policy_evaluator::metadata::{Metadata, MetadataRule};
use serde::Serialize;
use serde_json::{Value, json};

/// Kinds `scaffold manifest --type` writes (upstream's two).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "PascalCase")]
pub enum ManifestType {
    ClusterAdmissionPolicy,
    AdmissionPolicy,
}

/// Annotations of the module copied onto the manifest.
const COPIED_ANNOTATIONS: [&str; 2] = [
    "io.kubewarden.policy.category",
    "io.kubewarden.policy.severity",
];
const TITLE_ANNOTATION: &str = "io.kubewarden.policy.title";

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The policy's YAML: module, settings, the metadata's rules and `mutating`,
/// `backgroundAudit` only when the module does not support it, `contextAwareResources` only
/// for a ClusterAdmissionPolicy with `allow_context_aware` (a warning on stderr otherwise).
pub fn manifest(
    kind: ManifestType,
    uri: &str,
    metadata: &Metadata,
    settings: Option<Value>,
    title: Option<&str>,
    allow_context_aware: bool,
) -> Result<String> {
    let annotations = metadata.annotations.clone().unwrap_or_default();
    let name = title
        .map(str::to_string)
        .or_else(|| annotations.get(TITLE_ANNOTATION).cloned());
    if let Some(name) = &name
        && !valid_name(name)
    {
        bail!(
            "Invalid title '{name}'. Must use lowercase alphanumeric chars, '-' or '.', start/end with alphanumeric."
        );
    }
    let annotations: BTreeMap<String, String> = COPIED_ANNOTATIONS
        .iter()
        .filter_map(|key| Some((key.to_string(), annotations.get(*key)?.clone())))
        .collect();
    let cluster_wide = kind == ManifestType::ClusterAdmissionPolicy;
    let context_aware_resources = match (
        metadata.context_aware_resources.is_empty(),
        cluster_wide,
        allow_context_aware,
    ) {
        (true, _, _) | (false, false, _) => Vec::new(),
        (false, true, true) => {
            eprintln!(
                "WARN: the policy reads Kubernetes resources at evaluation time; review its contextAwareResources"
            );
            metadata.context_aware_resources.clone()
        }
        (false, true, false) => {
            eprintln!(
                "WARN: the policy wants to read Kubernetes resources at evaluation time. For safety reasons, the `contextAwareResources` attribute has been left empty: review them (kwctl inspect) and pass --allow-context-aware to fill it."
            );
            Vec::new()
        }
    };
    let manifest = Manifest {
        api_version: "policies.kubewarden.io/v1",
        kind: if cluster_wide {
            "ClusterAdmissionPolicy"
        } else {
            "AdmissionPolicy"
        },
        metadata: ManifestMetadata { annotations, name },
        spec: ManifestSpec {
            module: uri,
            settings: settings
                .filter(|s| !s.is_null())
                .unwrap_or_else(|| json!({})),
            rules: &metadata.rules,
            mutating: metadata.mutating,
            background_audit: (!metadata.background_audit).then_some(false),
            context_aware_resources,
        },
    };
    Ok(serde_yaml_ng::to_string(&manifest)?)
}

/// The manifest, its fields in upstream's order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: ManifestMetadata,
    spec: ManifestSpec<'a>,
}

#[derive(Serialize)]
struct ManifestMetadata {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestSpec<'a> {
    module: &'a str,
    settings: Value,
    rules: &'a [MetadataRule],
    mutating: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    background_audit: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    context_aware_resources: Vec<ContextAwareResource>,
}

/// The default verification configuration: modules signed by Kubewarden's GitHub Actions.
pub fn verification_config(config_dir: &str) -> String {
    format!(
        "# Default Kubewarden verification config
#
# With this config, the only valid policies are those signed by Kubewarden
# infrastructure.
#
# This config can be saved to its default location (for this OS) with:
#   kwctl scaffold verification-config > {config_dir}/verification-config.yml
#
# Providing a config in the default location enables Sigstore verification.
# See https://docs.kubewarden.io for more Sigstore verification options.
apiVersion: v1
allOf:
- kind: githubAction
  owner: kubewarden
  repo: null
  annotations: null
anyOf: null
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_must_be_resource_names() {
        assert!(valid_name("pod-privileged"));
        assert!(valid_name("a.b-c"));
        assert!(!valid_name("Pod"));
        assert!(!valid_name("-a"));
        assert!(!valid_name("a..b"));
    }

    #[test]
    fn the_verification_config_parses_as_this_project_reads_it() {
        let text = verification_config("/home/u/.config/kubewarden");
        api_types::config::VerificationConfig::parse(&text).expect("parses");
    }
}
