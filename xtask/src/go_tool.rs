//! Tools built from their Go modules into the cache, once per version (no release binaries
//! are downloaded): helm for the charts, opa for the Rego test policies.

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
    /// Package path of its `main`.
    pub package: &'static str,
    pub version: &'static str,
}

pub const HELM: GoTool = GoTool {
    name: "helm",
    package: "helm.sh/helm/v3/cmd/helm",
    version: "v3.22.0",
};

pub const OPA: GoTool = GoTool {
    name: "opa",
    package: "github.com/open-policy-agent/opa",
    version: "v1.22.2",
};

impl GoTool {
    fn dir(&self) -> PathBuf {
        cache_root()
            .join("tools")
            .join(format!("{}-{}", self.name, self.version))
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
        go_step(
            "==> ",
            &format!(
                "building {} {} from its Go module (once, a few minutes)",
                self.name, self.version
            ),
            Command::new("go")
                .current_dir(&dir)
                .env("GOBIN", &dir)
                .env("CGO_ENABLED", "0")
                .args([
                    "install",
                    "-trimpath",
                    &format!("{}@{}", self.package, self.version),
                ]),
        )?;
        match self.existing() {
            Some(binary) => Ok(binary),
            None => bail!(
                "go install finished but {} is missing",
                dir.join(self.name).display()
            ),
        }
    }
}
