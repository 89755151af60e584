//! What the kwctl tests share: the binary run with its own store, the committed fixtures.

// Each test target uses its own subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy-evaluator/tests/fixtures")
}

pub fn fixture(name: &str) -> String {
    fixtures()
        .join(format!("{name}.wasm"))
        .display()
        .to_string()
}

/// A scratch directory, also the cache home (so the store and compile cache are the test's).
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kwctl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

pub fn kwctl(home: &Path, args: &[&str]) -> Output {
    kwctl_with_env(home, args, &[])
}

/// [`kwctl`] with more environment variables.
pub fn kwctl_with_env(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kwctl"))
        .args(args)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .output()
        .expect("kwctl runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn pod_review(labels: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "kwctl-test",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": "default",
            "userInfo": {"username": "alice"},
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": labels}}
        }
    })
}

pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

/// A real registry (`docker-registry`) for a test, with the `sources.yml` that reaches it over
/// plain HTTP: the registry (stopped when dropped), its `host:port`, and the sources file.
/// `None` when the registry is not installed and the test may skip.
pub fn registry_with_sources(
    dir: &Path,
) -> Option<(test_cluster::registry::Registry, String, String)> {
    let registry = test_cluster::registry::start_registry(dir, None)?;
    let host = format!("localhost:{}", registry.port);
    let sources = write(
        dir,
        "sources.yml",
        &format!("insecure_sources: [\"{host}\"]\n"),
    );
    Some((registry, host, sources))
}

/// `kwctl push <fixture> <uri> --sources-path <sources>`, which must succeed.
pub fn push_fixture(dir: &Path, name: &str, uri: &str, sources: &str) {
    let output = kwctl(
        dir,
        &["push", &fixture(name), uri, "--sources-path", sources],
    );
    assert!(output.status.success(), "{}", stderr(&output));
}
