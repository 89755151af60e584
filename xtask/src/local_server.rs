//! Starting the policy-server binary locally (for the demo and the benchmarks).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use api_types::config::launch::PolicyServerLaunch;

/// POSTs `body` (JSON text, or `@file` as curl reads it) to `path` of a local policy-server
/// over HTTPS, trusting any certificate (the benchmarks' are made on the spot or rotated); the
/// JSON answer, `null` when there is none.
pub fn post_insecure(port: u16, path: &str, body: &str) -> Result<serde_json::Value> {
    let output = Command::new("curl")
        .args([
            "-sk",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ])
        .arg(format!("https://localhost:{port}{path}"))
        .stderr(Stdio::null())
        .output()
        .context("running curl")?;
    Ok(serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null))
}

pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Builds the policy-server (`release` or the dev profile) and returns the binary's path, as
/// cargo reports it.
pub fn build(release: bool) -> Result<PathBuf> {
    let mut args = vec!["-p", "policy-server", "--bin", "policy-server"];
    if release {
        args.push("--release");
    }
    let description = if release {
        "building the policy-server (release)"
    } else {
        "building the policy-server"
    };
    Ok(crate::cargo::build(description, &args)?
        .path("policy-server")?
        .to_path_buf())
}

/// A running policy-server, stopped with SIGTERM when dropped.
#[derive(Debug)]
pub struct LocalPolicyServer {
    pub child: Child,
    pub port: u16,
    /// Time from start to readiness.
    pub startup: Duration,
}

impl LocalPolicyServer {
    /// Starts `binary` over HTTPS with `dir/tls.{crt,key}` on `policies` and waits for
    /// readiness.
    pub fn start(binary: &Path, dir: &Path, policies: &Path, extra: &[&str]) -> Result<Self> {
        Self::start_with_env(binary, dir, policies, extra, &[])
    }

    /// [`LocalPolicyServer::start`] with more environment variables.
    pub fn start_with_env(
        binary: &Path,
        dir: &Path,
        policies: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let (port, readiness) = (free_port()?, free_port()?);
        let started = Instant::now();
        let mut launch = PolicyServerLaunch::on_loopback(policies, dir, port, readiness);
        launch.log_level = "warn".to_string();
        let child = launch
            .command(binary)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut server = LocalPolicyServer {
            child,
            port,
            startup: Duration::ZERO,
        };
        let deadline = started + Duration::from_secs(120);
        loop {
            let ready = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("http://127.0.0.1:{readiness}/readiness"))
                .output()
                .context("running curl")?;
            if ready.stdout == b"200" {
                server.startup = started.elapsed();
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("the policy-server exited during start-up ({status})");
            }
            if Instant::now() > deadline {
                bail!("the policy-server did not become ready within 120 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Peak and current resident memory, in KiB, from /proc.
    pub fn memory_kib(&self) -> (u64, u64) {
        let [peak, now] = crate::memory::status_kib(self.child.id(), ["VmHWM:", "VmRSS:"]);
        (peak, now)
    }
}

impl Drop for LocalPolicyServer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
