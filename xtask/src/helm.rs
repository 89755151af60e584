//! Helm, built from its Go module like the control plane (see [`crate::go_tool`]).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::go_tool::HELM;

/// Environment variable through which tests find the helm binary.
pub const HELM_ENV: &str = "KUBEWARDEN_HELM";

/// The helm binary, compiled first if this machine has none yet.
pub fn ensure() -> Result<PathBuf> {
    HELM.ensure()
}

/// The helm binary if it was built before.
pub fn ensure_if_present() -> Option<PathBuf> {
    HELM.existing()
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
