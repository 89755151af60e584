//! `kwctl inspect` and `kwctl policies`: what a module's metadata says, as upstream's kwctl
//! shows it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use policy_evaluator::metadata::{ExecutionMode, Metadata, PolicyType};

use crate::store::{Store, sha256_hex};

/// The annotations shown under "Details", in this order, named without the prefix.
const DETAIL_ANNOTATIONS: [&str; 6] =
    ["title", "description", "author", "url", "source", "license"];
const ANNOTATION_PREFIX: &str = "io.kubewarden.policy.";
const USAGE_ANNOTATION: &str = "io.kubewarden.policy.usage";

/// The module's metadata, or upstream's error when it has none.
pub fn metadata_of(uri: &str, module: &Path) -> Result<Metadata> {
    let wasm = std::fs::read(module).with_context(|| format!("reading {}", module.display()))?;
    Metadata::from_module(&wasm)
        .with_context(|| format!("reading the metadata of {uri}"))?
        .with_context(|| {
            format!(
                "No Kubewarden metadata found inside of '{uri}'.\nPolicies can be annotated with the `kwctl annotate` command."
            )
        })
}

fn mode_name(mode: ExecutionMode) -> &'static str {
    match mode {
        ExecutionMode::KubewardenWapc => "kubewarden-wapc",
        ExecutionMode::Wasi => "wasi",
        ExecutionMode::Opa => "opa",
        ExecutionMode::Gatekeeper => "gatekeeper",
    }
}

/// Rows of `key value`, the values aligned one space after the longest key.
fn table(rows: &[(String, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:<width$} {v}\n"))
        .collect()
}

/// The human-readable report.
pub fn pretty(metadata: &Metadata) -> Result<String> {
    let annotations = metadata.annotations.clone().unwrap_or_default();
    let mut details: Vec<(String, String)> = DETAIL_ANNOTATIONS
        .iter()
        .filter_map(|name| {
            let value = annotations.get(&format!("{ANNOTATION_PREFIX}{name}"))?;
            Some((format!("{name}:"), value.clone()))
        })
        .collect();
    details.push(("mutating:".into(), metadata.mutating.to_string()));
    details.push((
        "background audit support:".into(),
        metadata.background_audit.to_string(),
    ));
    details.push((
        "context aware:".into(),
        (!metadata.context_aware_resources.is_empty()).to_string(),
    ));
    details.push((
        "policy type:".into(),
        match metadata.policy_type {
            PolicyType::Kubernetes => "kubernetes",
            PolicyType::Raw => "raw",
        }
        .into(),
    ));
    details.push((
        "execution mode:".into(),
        mode_name(metadata.execution_mode).into(),
    ));
    if metadata.execution_mode == ExecutionMode::KubewardenWapc {
        details.push((
            "protocol version:".into(),
            serde_json::to_value(metadata.protocol_version)?
                .as_str()
                .unwrap_or("Unknown")
                .to_string(),
        ));
    }
    if let Some(version) = &metadata.minimum_kubewarden_version {
        details.push(("minimum kubewarden version:".into(), version.clone()));
    }
    let mut out = format!("Details\n{}\n", table(&details));
    let shown: Vec<String> = DETAIL_ANNOTATIONS
        .iter()
        .map(|name| format!("{ANNOTATION_PREFIX}{name}"))
        .chain([USAGE_ANNOTATION.to_string()])
        .collect();
    let others: Vec<(String, String)> = annotations
        .iter()
        .filter(|(key, _)| !shown.contains(key))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !others.is_empty() {
        write!(out, "Annotations\n{}\n", table(&others))?;
    }
    write!(
        out,
        "Rules\n```yaml\n{}```\n",
        serde_yaml_ng::to_string(&metadata.rules)?
    )?;
    if !metadata.context_aware_resources.is_empty() {
        write!(
            out,
            "\nContext Aware\nThe policy requires access to the following Kubernetes resources at evaluation time:\n```yaml\n{}```\nTo avoid abuses, review carefully what the policy requires access to.\n",
            serde_yaml_ng::to_string(&metadata.context_aware_resources)?
        )?;
    }
    if let Some(usage) = annotations.get(USAGE_ANNOTATION) {
        write!(out, "\nUsage\n---\n{}\n---\n", usage.trim_end())?;
    }
    Ok(out)
}

/// The "Sigstore signatures" section: each signature layer's digest, media type, size and
/// annotations (the signature, certificate, bundle), as upstream prints them.
pub fn pretty_signatures(manifest: Option<&oci_client::manifest::OciImageManifest>) -> String {
    let Some(manifest) = manifest else {
        return "\nNo sigstore signatures found\n".to_string();
    };
    let mut out = String::from("\nSigstore signatures\n\n");
    for layer in &manifest.layers {
        let mut rows = vec![
            ("Digest:".to_string(), layer.digest.clone()),
            ("Media type:".to_string(), layer.media_type.clone()),
            ("Size:".to_string(), layer.size.to_string()),
        ];
        if let Some(annotations) = &layer.annotations {
            rows.push(("Annotations".to_string(), String::new()));
            rows.extend(annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        out.push_str(&table(&rows));
        out.push('\n');
    }
    out
}

/// `kwctl policies`: the store's policies in upstream's table.
pub fn policies(store: &Store) -> Result<String> {
    let rows: Vec<[String; 5]> = store
        .list()
        .into_iter()
        .map(|(uri, path)| {
            let metadata = std::fs::read(&path)
                .ok()
                .and_then(|wasm| Metadata::from_module(&wasm).ok().flatten());
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            [
                uri,
                metadata
                    .as_ref()
                    .map_or("unknown", |m| if m.mutating { "yes" } else { "no" })
                    .to_string(),
                if metadata
                    .as_ref()
                    .is_some_and(|m| !m.context_aware_resources.is_empty())
                {
                    "yes"
                } else {
                    "no"
                }
                .to_string(),
                sha256_hex(&path)
                    .map(|d| d[..12].to_string())
                    .unwrap_or_default(),
                pretty_bytes(size),
            ]
        })
        .collect();
    if rows.is_empty() {
        return Ok(String::new());
    }
    let header = ["Policy", "Mutating", "Context aware", "SHA-256", "Size"].map(String::from);
    let widths: Vec<usize> = (0..5)
        .map(|i| {
            rows.iter()
                .chain([&header])
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let rule = |fill: char| {
        let cells: Vec<String> = widths
            .iter()
            .map(|w| fill.to_string().repeat(w + 2))
            .collect();
        format!("+{}+\n", cells.join("+"))
    };
    let line = |row: &[String; 5]| {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!(" {cell:<w$} "))
            .collect();
        format!("|{}|\n", cells.join("|"))
    };
    let mut out = rule('-');
    out.push_str(&line(&header));
    out.push_str(&rule('='));
    for row in &rows {
        out.push_str(&line(row));
    }
    out.push_str(&rule('-'));
    Ok(out)
}

/// Decimal units, as upstream's `pretty_bytes`.
fn pretty_bytes(size: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = size as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{size} B")
    } else {
        format!("{value:.2} {}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_decimal_units() {
        assert_eq!(pretty_bytes(896), "896 B");
        assert_eq!(pretty_bytes(1_020_000), "1.02 MB");
    }
}
