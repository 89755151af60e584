//! Rendering and installing the charts with the helm binary `cargo xtask` builds.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Environment variable naming the helm binary (set by `cargo xtask test`).
pub const HELM_ENV: &str = "KUBEWARDEN_HELM";

/// The helm binary, or `None` (the test should return) when none is configured and no test
/// server is required. With `KUBEWARDEN_REQUIRE_TEST_SERVERS` or `KUBEWARDEN_REQUIRE_CLUSTER`
/// set, a missing helm fails the test.
pub fn helm(test: &str) -> Option<PathBuf> {
    match std::env::var_os(HELM_ENV).filter(|v| !v.is_empty()) {
        Some(path) => Some(PathBuf::from(path)),
        None => {
            let required = std::env::var_os("KUBEWARDEN_REQUIRE_TEST_SERVERS").is_some()
                || std::env::var_os(crate::REQUIRE_ENV).is_some();
            if required {
                panic!("{test}: {HELM_ENV} is not set; run through `cargo xtask test`");
            }
            eprintln!("skipped {test}: no helm ({HELM_ENV} unset; `cargo xtask test` builds it)");
            None
        }
    }
}

/// The chart directory `charts/<name>`.
pub fn chart(name: &str) -> PathBuf {
    crate::repo_root().join("charts").join(name)
}

/// Runs helm with `args`, returning its standard output.
pub fn run(helm: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new(helm)
        .args(args)
        .output()
        .with_context(|| format!("running {}", helm.display()))?;
    if !output.status.success() {
        bail!(
            "helm {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `helm template` of a chart; returns the manifest text.
pub fn template(
    helm: &Path,
    chart_name: &str,
    release: &str,
    namespace: &str,
    extra: &[&str],
) -> Result<String> {
    let chart = chart(chart_name);
    let chart = chart.to_string_lossy();
    let mut args = vec![
        "template",
        release,
        chart.as_ref(),
        "--namespace",
        namespace,
    ];
    args.extend_from_slice(extra);
    run(helm, &args)
}

/// Splits a rendered manifest into its objects.
pub fn objects(manifest: &str) -> Result<Vec<Value>> {
    let mut objects = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(manifest) {
        let value: Value =
            serde::Deserialize::deserialize(document).context("parsing a rendered document")?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

/// The object of `kind` named `name`.
pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}
