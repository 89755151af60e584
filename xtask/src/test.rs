//! `cargo xtask test`: the project's test command, as run by CI.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// Runs a command, echoing it first, and fails with its exit status.
pub fn run_step(description: &str, command: &mut Command) -> Result<()> {
    println!("==> {description}");
    let status = command
        .status()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{description} failed ({status})");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs every test of the workspace: unit and in-process tests of every crate, and the check
/// that the committed CRDs match the types.
pub fn run() -> Result<()> {
    run_step(
        "unit and in-process tests",
        cargo().args(["test", "--workspace", "--locked"]),
    )
}
