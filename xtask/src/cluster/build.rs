//! Builds pinned, version-stamped control-plane binaries from the Go module proxy.
//!
//! `k8s.io/kubernetes` cannot be `go install`ed: its go.mod points every staging module
//! (`k8s.io/api`, `k8s.io/client-go`, ...) at `./staging/...`. A generated wrapper module
//! replaces each of them with the published `v0.<minor>.<patch>` release instead, and builds
//! the commands inside it. The list of staging modules is read from the served go.mod, not
//! kept by hand.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::{KUBERNETES_VERSION, KWOK_VERSION};
use crate::go_tool::go_step;
use crate::paths::cache_root;
use crate::progress;

/// The binaries `up` needs, all in one directory.
pub const BINARIES: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
];

/// Stage files of kwok's "fast" profile: nodes become Ready with lease heartbeats, pods
/// become Ready at once, and deletions complete.
const KWOK_STAGES: &[&str] = &[
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
];

pub fn version_dir() -> PathBuf {
    cache_root().join(format!("k8s-{KUBERNETES_VERSION}"))
}

pub fn bin_dir() -> PathBuf {
    version_dir().join("bin")
}

pub fn stages_file() -> PathBuf {
    version_dir().join("kwok-stages.yaml")
}

fn is_complete() -> bool {
    BINARIES.iter().all(|b| bin_dir().join(b).is_file()) && stages_file().is_file()
}

fn go(dir: &Path) -> Command {
    let mut command = Command::new("go");
    command
        .current_dir(dir)
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-mod=mod");
    command
}

/// What every line of this build starts with: it may run beside a cargo build.
const PREFIX: &str = "[control plane] ";

fn run(description: &str, command: &mut Command) -> Result<String> {
    go_step(PREFIX, description, command)
}

/// `1.34.4` → (`0.34.4`, `34`): staging modules are versioned `v0.<minor>.<patch>`.
fn staging_version(version: &str) -> Result<(String, String)> {
    let mut parts = version.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("1"), Some(minor), Some(patch)) => {
            Ok((format!("0.{minor}.{patch}"), minor.to_string()))
        }
        _ => bail!("unexpected Kubernetes version {version}"),
    }
}

/// Module paths that k8s.io/kubernetes replaces with `./staging/...`.
fn staging_modules(go_mod: &str) -> Vec<String> {
    go_mod
        .lines()
        .filter_map(|line| {
            let (module, target) = line.trim().split_once("=>")?;
            target
                .trim()
                .starts_with("./staging/")
                .then(|| module.trim().to_string())
        })
        .filter(|m| m.starts_with("k8s.io/"))
        .collect()
}

/// The `godebug default=goX` line of the served go.mod, which the wrapper must repeat.
fn godebug_default(go_mod: &str) -> Option<String> {
    go_mod.lines().find_map(|line| {
        line.trim()
            .strip_prefix("godebug default=")
            .map(|v| v.trim().to_string())
    })
}

/// Linker flags that stamp the Kubernetes version into a k8s.io/kubernetes command.
fn ldflags(minor: &str) -> String {
    let version_pkg = "k8s.io/component-base/version";
    format!(
        "-s -w -X {version_pkg}.gitVersion=v{KUBERNETES_VERSION} -X {version_pkg}.gitMajor=1 -X {version_pkg}.gitMinor={minor} -X {version_pkg}.gitTreeState=clean"
    )
}

fn wrapper_dir() -> PathBuf {
    version_dir().join("wrapper")
}

/// The real node's binaries, beside the control plane's.
pub const NODE_BINARIES: &[&str] = &["kubelet", "kube-proxy", "coredns", "pause"];

/// The CoreDNS release of the real node's cluster DNS.
pub const COREDNS_VERSION: &str = "v1.14.7";

fn node_is_complete() -> bool {
    NODE_BINARIES.iter().all(|b| bin_dir().join(b).is_file())
}

/// Builds the control plane and the real node's binaries (kubelet and kube-proxy from the same
/// k8s.io/kubernetes module, CoreDNS from its module, the pause program with the C compiler)
/// where missing, and returns the binary directory.
pub fn build_node() -> Result<PathBuf> {
    let out = build()?;
    if node_is_complete() {
        return Ok(out);
    }
    let started = Instant::now();
    progress::say(&format!(
        "{PREFIX}building the real node: kubelet and kube-proxy {KUBERNETES_VERSION}, CoreDNS {COREDNS_VERSION}, pause (once; several minutes on 2 cores)"
    ));
    let (_, minor) = staging_version(KUBERNETES_VERSION)?;
    let ldflags = ldflags(&minor);
    for command in ["kubelet", "kube-proxy"] {
        if out.join(command).is_file() {
            continue;
        }
        run(
            &format!("compiling {command}"),
            go(&wrapper_dir())
                .args(["build", "-trimpath", "-o"])
                .arg(out.join(command))
                .args(["-ldflags", &ldflags])
                .arg(format!("k8s.io/kubernetes/cmd/{command}")),
        )?;
    }
    if !out.join("coredns").is_file() {
        go_install(
            &format!("compiling CoreDNS {COREDNS_VERSION}"),
            &format!("github.com/coredns/coredns@{COREDNS_VERSION}"),
            &out,
        )?;
    }
    let source = crate::paths::repo_root().join("xtask/assets/pause.c");
    run(
        "compiling pause (static)",
        Command::new("gcc")
            .args(["-static", "-Os", "-s", "-o"])
            .arg(out.join("pause"))
            .arg(&source),
    )?;
    progress::say(&format!(
        "{PREFIX}real node built in {}",
        progress::elapsed(started.elapsed())
    ));
    Ok(out)
}

/// `go install package@version` into `out`, outside the wrapper module: kwok and CoreDNS follow
/// newer k8s.io modules than the pinned control plane, so the wrapper's replace block must not
/// apply to them.
fn go_install(description: &str, package_at_version: &str, out: &Path) -> Result<()> {
    run(
        description,
        go(&version_dir())
            .env("GOBIN", out)
            .env_remove("GOFLAGS")
            .args([
                "install",
                "-trimpath",
                "-ldflags",
                "-s -w",
                package_at_version,
            ]),
    )?;
    Ok(())
}

/// Builds whatever is missing and returns the binary directory.
pub fn build() -> Result<PathBuf> {
    if is_complete() {
        println!(
            "{PREFIX}Kubernetes {KUBERNETES_VERSION} already built in {}",
            bin_dir().display()
        );
        return Ok(bin_dir());
    }
    let started = Instant::now();
    let (staging, minor) = staging_version(KUBERNETES_VERSION)?;
    let wrapper = wrapper_dir();
    fs::create_dir_all(&wrapper).with_context(|| format!("creating {}", wrapper.display()))?;
    progress::say(&format!(
        "{PREFIX}building Kubernetes {KUBERNETES_VERSION} (apiserver, controller-manager, scheduler), etcd and kwok {KWOK_VERSION} from the Go module proxy into {} (once; about 15 minutes on 2 cores)",
        bin_dir().display()
    ));
    for stale in ["go.mod", "go.sum"] {
        let _ = fs::remove_file(wrapper.join(stale));
    }
    run(
        "creating the wrapper module",
        go(&wrapper).args(["mod", "init", "local/k8sbin"]),
    )?;
    let info = run(
        &format!("downloading k8s.io/kubernetes@v{KUBERNETES_VERSION}"),
        go(&wrapper).args([
            "mod",
            "download",
            "-json",
            &format!("k8s.io/kubernetes@v{KUBERNETES_VERSION}"),
        ]),
    )?;
    let info: serde_json::Value =
        serde_json::from_str(&info).context("reading `go mod download -json`")?;
    let go_mod_path = info["GoMod"]
        .as_str()
        .context("`go mod download` did not name the go.mod")?;
    let go_mod =
        fs::read_to_string(go_mod_path).with_context(|| format!("reading {go_mod_path}"))?;
    let modules = staging_modules(&go_mod);
    if modules.is_empty() {
        bail!("found no staging modules in {go_mod_path}");
    }
    let mut edit = go(&wrapper);
    edit.args(["mod", "edit"]);
    for module in &modules {
        edit.arg(format!("-replace={module}={module}@v{staging}"));
    }
    if let Some(godebug) = godebug_default(&go_mod) {
        edit.arg(format!("-godebug=default={godebug}"));
    }
    run(
        &format!(
            "replacing {} staging modules with v{staging}",
            modules.len()
        ),
        &mut edit,
    )?;
    fs::write(
        wrapper.join("tools.go"),
        "//go:build tools\n\npackage tools\n\nimport (\n\t_ \"go.etcd.io/etcd/server/v3\"\n\t_ \"k8s.io/kubernetes/cmd/kube-apiserver\"\n\t_ \"k8s.io/kubernetes/cmd/kube-controller-manager\"\n\t_ \"k8s.io/kubernetes/cmd/kube-scheduler\"\n\t_ \"k8s.io/kubernetes/cmd/kubelet\"\n\t_ \"k8s.io/kubernetes/cmd/kube-proxy\"\n)\n",
    )
    .context("writing tools.go")?;
    run(
        "resolving dependencies",
        go(&wrapper).args(["get", &format!("k8s.io/kubernetes@v{KUBERNETES_VERSION}")]),
    )?;
    run(
        "tidying the wrapper module",
        go(&wrapper).args(["mod", "tidy"]),
    )?;
    let ldflags = ldflags(&minor);
    let out = bin_dir();
    // One `go build` per command, so each says when it is done; the Go build cache shares
    // what they have in common.
    let total = BINARIES.len();
    for (index, command) in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ]
    .iter()
    .enumerate()
    {
        run(
            &format!("compiling {command} ({}/{total})", index + 1),
            go(&wrapper)
                .args(["build", "-trimpath", "-o"])
                .arg(out.join(command))
                .args(["-ldflags", &ldflags])
                .arg(format!("k8s.io/kubernetes/cmd/{command}")),
        )?;
    }
    run(
        &format!("compiling etcd (4/{total})"),
        go(&wrapper)
            .args(["build", "-trimpath", "-ldflags", "-s -w", "-o"])
            .arg(out.join("etcd"))
            .arg("go.etcd.io/etcd/server/v3"),
    )?;
    go_install(
        &format!("compiling kwok {KWOK_VERSION} (5/{total})"),
        &format!("sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"),
        &out,
    )?;
    write_kwok_stages()?;
    progress::say(&format!(
        "{PREFIX}built in {}; {} used",
        progress::elapsed(started.elapsed()),
        du(&version_dir())
    ));
    Ok(out)
}

/// A control-plane build running as a child process (`cargo xtask cluster build`) beside other
/// work, printing its own progress. Dropped before [`BackgroundBuild::wait`] (the other work
/// failed), it is stopped with its Go processes.
#[derive(Debug)]
pub struct BackgroundBuild(Option<Child>);

impl BackgroundBuild {
    /// Starts building what is missing of the control plane, helm too with `helm`, the real
    /// node's binaries with `node`; does nothing when all of it is built already.
    pub fn start(helm: bool, node: bool) -> Result<Self> {
        let helm_missing = helm
            && (crate::go_tool::HELM.existing().is_none()
                || crate::go_tool::OTELCOL.existing().is_none());
        let node_missing = node && !node_is_complete();
        if is_complete() && !helm_missing && !node_missing {
            return Ok(BackgroundBuild(None));
        }
        let exe = std::env::current_exe().context("locating the xtask binary")?;
        let mut command = Command::new(exe);
        command.args(["cluster", "build"]);
        if helm_missing {
            command.arg("--helm");
        }
        if node_missing {
            command.arg("--node");
        }
        // Its own process group, so that stopping it stops the `go` processes under it.
        let child = command
            .process_group(0)
            .spawn()
            .context("starting the control-plane build")?;
        Ok(BackgroundBuild(Some(child)))
    }

    /// Waits for the build to end; an error if it failed (its own output says why).
    pub fn wait(mut self) -> Result<()> {
        let Some(mut child) = self.0.take() else {
            return Ok(());
        };
        let status = child
            .wait()
            .context("waiting for the control-plane build")?;
        if !status.success() {
            bail!("building the control plane failed ({status}); its error is printed above");
        }
        Ok(())
    }
}

impl Drop for BackgroundBuild {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            super::lifecycle::signal_group(child.id(), "-TERM");
            let _ = child.wait();
        }
    }
}

/// Concatenates kwok's stage definitions from its module source.
fn write_kwok_stages() -> Result<()> {
    let info = run(
        "locating kwok's stage definitions",
        Command::new("go").args([
            "mod",
            "download",
            "-json",
            &format!("sigs.k8s.io/kwok@{KWOK_VERSION}"),
        ]),
    )?;
    let info: serde_json::Value =
        serde_json::from_str(&info).context("reading `go mod download -json`")?;
    let dir =
        PathBuf::from(info["Dir"].as_str().context("no module directory")?).join("kustomize/stage");
    let mut stages = String::new();
    for file in KWOK_STAGES {
        let path = dir.join(file);
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        stages.push_str("---\n");
        stages.push_str(&text);
        if !text.ends_with('\n') {
            stages.push('\n');
        }
    }
    fs::write(stages_file(), stages).context("writing the kwok stages")
}

/// Human-readable disk use of a directory (via `du`, for the build summary).
fn du(path: &Path) -> String {
    Command::new("du")
        .arg("-sh")
        .arg(path)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_staging_replace_block() {
        let go_mod = "module k8s.io/kubernetes\n\ngodebug default=go1.24\n\nreplace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n\tk8s.io/client-go => ./staging/src/k8s.io/client-go\n\tgithub.com/x/y => github.com/x/z v1.0.0\n)\n";
        assert_eq!(staging_modules(go_mod), ["k8s.io/api", "k8s.io/client-go"]);
        assert_eq!(godebug_default(go_mod).as_deref(), Some("go1.24"));
        assert_eq!(
            staging_version("1.34.4").expect("valid"),
            ("0.34.4".into(), "34".into())
        );
        assert!(staging_version("v1.34").is_err());
    }
}
