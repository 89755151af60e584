//! Tools built from their Go modules into the cache, once per version (no release binaries
//! are downloaded): helm for the charts, opa for the Rego test policies, and an OpenTelemetry
//! Collector for the telemetry tests.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};

use crate::paths::cache_root;
use crate::progress;

/// Runs one step of a Go build (captured), saying what it does and, while it runs long, for
/// how long; a failure says what to check.
pub(crate) fn go_step(prefix: &str, description: &str, command: &mut Command) -> Result<String> {
    progress::run_captured(prefix, description, command).map_err(|err| {
        anyhow::anyhow!("{err:#}\n(check that Go is on PATH and the Go module proxy is reachable)")
    })
}

/// A command-line tool of a Go module at a fixed version.
#[derive(Debug, Clone, Copy)]
pub struct GoTool {
    /// Name of the binary.
    pub name: &'static str,
    /// Package path of its `main`: `go install`ed at `version`.
    pub package: &'static str,
    pub version: &'static str,
    /// A module of this repository (its `go.mod` pins `version`) built instead of `package`.
    pub local_module: Option<&'static str>,
}

pub const HELM: GoTool = GoTool {
    name: "helm",
    package: "helm.sh/helm/v3/cmd/helm",
    version: "v3.22.0",
    local_module: None,
};

pub const OPA: GoTool = GoTool {
    name: "opa",
    package: "github.com/open-policy-agent/opa",
    version: "v1.22.2",
    local_module: None,
};

/// A minimal OpenTelemetry Collector (OTLP receiver, file exporter) whose `main` is in this
/// repository: no published module bundles those two.
pub const OTELCOL: GoTool = GoTool {
    name: "kwrs-otelcol",
    package: "",
    version: "v0.161.0",
    local_module: Some("xtask/assets/otelcol"),
};

/// Environment variable through which tests find the collector.
pub const OTELCOL_ENV: &str = "KUBEWARDEN_OTELCOL";

impl GoTool {
    fn dir(&self) -> PathBuf {
        let name = match self.local_module {
            // Edits of the module's files build a new binary.
            Some(module) => format!(
                "{}-{}-{:016x}",
                self.name,
                self.version,
                source_hash(&crate::paths::repo_root().join(module))
            ),
            None => format!("{}-{}", self.name, self.version),
        };
        cache_root().join("tools").join(name)
    }

    /// The binary if it was built before.
    pub fn existing(&self) -> Option<PathBuf> {
        let binary = self.dir().join(self.name);
        binary.is_file().then_some(binary)
    }

    /// The binary, compiled first if this machine has none yet (a few minutes, once).
    pub fn ensure(&self) -> Result<PathBuf> {
        if let Some(binary) = self.existing() {
            return Ok(binary);
        }
        let dir = self.dir();
        std::fs::create_dir_all(&dir)?;
        let mut command = Command::new("go");
        command.env("CGO_ENABLED", "0");
        match self.local_module {
            Some(module) => command
                .current_dir(crate::paths::repo_root().join(module))
                .args(["build", "-trimpath", "-o"])
                .arg(dir.join(self.name))
                .arg("."),
            None => command.current_dir(&dir).env("GOBIN", &dir).args([
                "install",
                "-trimpath",
                &format!("{}@{}", self.package, self.version),
            ]),
        };
        go_step(
            "==> ",
            &format!(
                "building {} {} from its Go modules (once, a few minutes)",
                self.name, self.version
            ),
            &mut command,
        )?;
        match self.existing() {
            Some(binary) => Ok(binary),
            None => bail!(
                "the Go build finished but {} is missing",
                dir.join(self.name).display()
            ),
        }
    }
}

/// FNV-1a over the files of a local Go module's directory (names and contents, in name order):
/// identifies the sources a cached binary was built from.
fn source_hash(dir: &std::path::Path) -> u64 {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default();
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in files.iter().filter(|path| path.is_file()) {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for byte in name.bytes().chain(std::fs::read(file).unwrap_or_default()) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}
