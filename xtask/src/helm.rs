//! Helm, built from its Go module like the control plane (no download of release binaries):
//! `go install helm.sh/helm/v3/cmd/helm` into the cache, once per version.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cluster::build::run;
use crate::cluster::cache_root;

pub const HELM_VERSION: &str = "v3.22.0";

/// Environment variable through which tests find the helm binary.
pub const HELM_ENV: &str = "KUBEWARDEN_HELM";

fn helm_dir() -> PathBuf {
    cache_root()
        .join("tools")
        .join(format!("helm-{HELM_VERSION}"))
}

/// The helm binary, compiled first if this machine has none yet (a few minutes, once).
pub fn ensure() -> Result<PathBuf> {
    let binary = helm_dir().join("helm");
    if binary.is_file() {
        return Ok(binary);
    }
    std::fs::create_dir_all(helm_dir())?;
    println!("==> building helm {HELM_VERSION} from its Go module (once)");
    run(
        &format!("compiling helm {HELM_VERSION}"),
        Command::new("go")
            .current_dir(helm_dir())
            .env("GOBIN", helm_dir())
            .env("CGO_ENABLED", "0")
            .args([
                "install",
                "-trimpath",
                &format!("helm.sh/helm/v3/cmd/helm@{HELM_VERSION}"),
            ]),
    )?;
    if !binary.is_file() {
        bail!("go install finished but {} is missing", binary.display());
    }
    Ok(binary)
}

/// The helm binary if it was built before.
pub fn ensure_if_present() -> Option<PathBuf> {
    let binary = helm_dir().join("helm");
    binary.is_file().then_some(binary)
}

/// `cargo xtask helm -- <args>`: runs helm, building it first if needed.
pub fn exec(args: &[String]) -> Result<()> {
    let status = Command::new(ensure()?)
        .args(args)
        .status()
        .context("running helm")?;
    if !status.success() {
        bail!("helm exited with {status}");
    }
    Ok(())
}
