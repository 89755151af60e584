//! Building the workspace's binaries with cargo, and finding them where cargo put them.
//!
//! Paths come from cargo itself: each build's `--message-format=json` names every executable it
//! produced, and `cargo metadata` names the target directory. Nothing here guesses a directory
//! from `CARGO_TARGET_DIR`, `target/`, a profile name or a config file: cargo knows them all.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::progress;

/// The cargo that runs this xtask (`CARGO`), or `cargo` on PATH.
pub fn program() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// A cargo command of this workspace.
pub fn command() -> Command {
    let mut command = Command::new(program());
    command.current_dir(crate::paths::repo_root());
    command
}

/// The executables of one build: binaries by target name (`policy-server`, `cluster-demo`),
/// and the test harnesses of integration-test targets by name (`e2e`, `cluster_controller`).
#[derive(Debug, Default)]
pub struct Binaries {
    bins: BTreeMap<String, PathBuf>,
    tests: BTreeMap<String, PathBuf>,
}

impl Binaries {
    /// The path of the binary `name`; an error names what was built instead.
    pub fn path(&self, name: &str) -> Result<&Path> {
        self.bins.get(name).map(PathBuf::as_path).with_context(|| {
            format!(
                "cargo built no binary named {name} (it built: {})",
                self.bins.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// The test executable of the integration-test target `name`.
    pub fn test(&self, name: &str) -> Result<&Path> {
        self.tests
            .get(name)
            .map(PathBuf::as_path)
            .with_context(|| format!("cargo built no test target named {name}"))
    }

    /// The one directory holding all of `names` (the e2e harness takes a directory).
    pub fn common_dir(&self, names: &[&str]) -> Result<PathBuf> {
        let mut dir: Option<&Path> = None;
        for name in names {
            let parent = self
                .path(name)?
                .parent()
                .with_context(|| format!("{name} has no parent directory"))?;
            match dir {
                None => dir = Some(parent),
                Some(dir) if dir == parent => {}
                Some(dir) => bail!(
                    "cargo put {name} in {} but the others in {}",
                    parent.display(),
                    dir.display()
                ),
            }
        }
        dir.map(Path::to_path_buf)
            .context("no executable names were given")
    }
}

/// Runs `cargo build <args>` with cargo's own progress on the terminal and returns the
/// executables it produced (fresh or rebuilt). Prints the elapsed time when it took long.
pub fn build(description: &str, args: &[&str]) -> Result<Binaries> {
    compile(description, &["build"], args)
}

/// Compiles test targets (`cargo test --no-run <args>`) as [`build`] does, without running them.
pub fn build_tests(description: &str, args: &[&str]) -> Result<Binaries> {
    compile(description, &["test", "--no-run"], args)
}

fn compile(description: &str, subcommand: &[&str], args: &[&str]) -> Result<Binaries> {
    println!("==> {description}");
    let started = Instant::now();
    let mut child = command()
        .args(subcommand)
        .args(["--locked", "--message-format=json-render-diagnostics"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("{description}: cannot start {:?}", program()))?;
    let stdout = child.stdout.take().context("cargo's stdout")?;
    let mut binaries = Binaries::default();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's messages")?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            // Not a cargo message (a build script may print); show it as cargo would.
            println!("{line}");
            continue;
        };
        match executable_of(&message) {
            Some(Executable::Bin(name, path)) => {
                binaries.bins.insert(name, path);
            }
            Some(Executable::Test(name, path)) => {
                binaries.tests.insert(name, path);
            }
            None => {}
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!("{description} failed ({status}); cargo's errors are above");
    }
    progress::report_if_long(description, started);
    Ok(binaries)
}

/// An executable a build produced.
#[derive(Debug, PartialEq, Eq)]
enum Executable {
    /// A binary target, built as a program.
    Bin(String, PathBuf),
    /// An integration-test target's test harness.
    Test(String, PathBuf),
}

/// The executable a `compiler-artifact` message announces, if any. Unit-test harnesses of
/// libraries and binaries (named like their crate) are left out.
fn executable_of(message: &serde_json::Value) -> Option<Executable> {
    if message["reason"] != "compiler-artifact" {
        return None;
    }
    let name = message["target"]["name"].as_str()?.to_string();
    let path = PathBuf::from(message["executable"].as_str()?);
    let is_kind = |kind: &str| {
        message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == kind))
    };
    let test_harness = message["profile"]["test"] == true;
    match (is_kind("bin"), is_kind("test"), test_harness) {
        (true, _, false) => Some(Executable::Bin(name, path)),
        (_, true, true) => Some(Executable::Test(name, path)),
        _ => None,
    }
}

/// Cargo's target directory for this workspace, as `cargo metadata` reports it (wherever a
/// config file, `CARGO_TARGET_DIR` or `CARGO_BUILD_TARGET_DIR` puts it). Outputs such as logs
/// and benchmark reports go below it.
pub fn target_dir() -> Result<PathBuf> {
    static TARGET_DIR: OnceLock<PathBuf> = OnceLock::new();
    if let Some(dir) = TARGET_DIR.get() {
        return Ok(dir.clone());
    }
    let output = command()
        .args(["metadata", "--format-version", "1", "--no-deps", "--locked"])
        .stderr(Stdio::inherit())
        .output()
        .context("running `cargo metadata`")?;
    if !output.status.success() {
        bail!("`cargo metadata` failed ({})", output.status);
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("reading `cargo metadata`")?;
    let dir = metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("`cargo metadata` named no target directory")?;
    Ok(TARGET_DIR.get_or_init(|| dir).clone())
}

/// A directory below the target directory, created (logs, reports).
pub fn output_dir(name: &str) -> Result<PathBuf> {
    let dir = target_dir()?.join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(kind: &str, name: &str, test: bool, executable: Option<&str>) -> serde_json::Value {
        serde_json::json!({
            "reason": "compiler-artifact",
            "package_id": "path+file:///src/crates/policy-server#0.1.0",
            "target": {"kind": [kind], "name": name, "src_path": "/src/main.rs"},
            "profile": {"opt_level": "0", "test": test},
            "executable": executable,
            "fresh": true
        })
    }

    #[test]
    fn reads_executables_from_cargo_messages() {
        let path = "/elsewhere/debug/policy-server";
        assert_eq!(
            executable_of(&artifact("bin", "policy-server", false, Some(path))),
            Some(Executable::Bin("policy-server".into(), path.into()))
        );
        let harness = "/elsewhere/debug/deps/e2e-0123";
        assert_eq!(
            executable_of(&artifact("test", "e2e", true, Some(harness))),
            Some(Executable::Test("e2e".into(), harness.into()))
        );
        // The unit tests of a binary or library share its name: not the program.
        let unit = "/elsewhere/debug/deps/policy_server-0123";
        assert_eq!(
            executable_of(&artifact("bin", "policy-server", true, Some(unit))),
            None
        );
        assert_eq!(
            executable_of(&artifact("lib", "e2e", true, Some(unit))),
            None
        );
        assert_eq!(
            executable_of(&artifact("lib", "api_types", false, None)),
            None
        );
        let finished = serde_json::json!({"reason": "build-finished", "success": true});
        assert_eq!(executable_of(&finished), None);
    }

    #[test]
    fn one_directory_for_the_stack_or_an_error_naming_the_odd_one() {
        let mut binaries = Binaries::default();
        for (name, path) in [
            ("controller", "/t/debug/controller"),
            ("policy-server", "/t/debug/policy-server"),
        ] {
            binaries.bins.insert(name.into(), path.into());
        }
        assert_eq!(
            binaries
                .common_dir(&["controller", "policy-server"])
                .expect("same dir"),
            PathBuf::from("/t/debug")
        );
        let missing = binaries
            .common_dir(&["controller", "audit-scanner"])
            .expect_err("missing");
        assert!(
            missing
                .to_string()
                .contains("no binary named audit-scanner"),
            "{missing}"
        );
        binaries
            .bins
            .insert("audit-scanner".into(), "/t/release/audit-scanner".into());
        let split = binaries
            .common_dir(&["controller", "audit-scanner"])
            .expect_err("two dirs");
        assert!(split.to_string().contains("/t/release"), "{split}");
    }

    /// `cargo xtask` compiles xtask before it can print a line: on a fresh clone, a task runner
    /// depending on the WebAssembly runtime (or kube's client) is minutes of silence.
    #[test]
    fn the_task_runner_does_not_compile_the_runtime() {
        let output = command()
            .args(["tree", "--locked", "--offline", "-p", "xtask"])
            .args([
                "--edges",
                "normal,build",
                "--prefix",
                "none",
                "--format",
                "{p}",
            ])
            .output()
            .expect("cargo tree runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let tree = String::from_utf8_lossy(&output.stdout);
        for heavy in ["wasmtime", "policy-evaluator", "kube-client", "tokio"] {
            assert!(
                !tree
                    .lines()
                    .any(|line| line.starts_with(&format!("{heavy} "))),
                "xtask depends on {heavy}:\n{tree}"
            );
        }
    }
}
