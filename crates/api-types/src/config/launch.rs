//! The policy-server's command line as every launcher in this repository builds it: xtask's
//! benchmarks and demo, the end-to-end tests' local kubelet stand-in, and the integration
//! tests. One place names the flags (upstream's), so a renamed or added flag changes every
//! launcher at once.

use std::path::PathBuf;
use std::process::Command;

/// Where a policy-server process reads its policies and certificate, and what it binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyServerLaunch {
    /// `policies.yml`.
    pub policies: PathBuf,
    /// Where remote modules are downloaded.
    pub download_dir: PathBuf,
    /// `sources.yml` (insecure sources, source authorities), if any.
    pub sources: Option<PathBuf>,
    /// Address every server binds (`127.0.0.1`, `0.0.0.0`).
    pub addr: String,
    /// HTTPS webhook port.
    pub port: u16,
    pub readiness_port: u16,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// `KUBEWARDEN_LOG_LEVEL`.
    pub log_level: String,
}

impl PolicyServerLaunch {
    /// A server on loopback, with `dir/tls.crt` and `dir/tls.key` and downloads into `dir`.
    pub fn on_loopback(
        policies: impl Into<PathBuf>,
        dir: impl Into<PathBuf>,
        port: u16,
        readiness_port: u16,
    ) -> Self {
        let dir = dir.into();
        PolicyServerLaunch {
            policies: policies.into(),
            sources: None,
            addr: "127.0.0.1".to_string(),
            port,
            readiness_port,
            cert_file: dir.join("tls.crt"),
            key_file: dir.join("tls.key"),
            download_dir: dir,
            log_level: "info".to_string(),
        }
    }

    /// The command running `binary` with these settings; callers add their own flags,
    /// environment and output.
    pub fn command(&self, binary: &std::path::Path) -> Command {
        let mut command = Command::new(binary);
        command
            .arg("--policies")
            .arg(&self.policies)
            .arg("--policies-download-dir")
            .arg(&self.download_dir)
            .args(["--addr", &self.addr])
            .args(["--port", &self.port.to_string()])
            .args(["--readiness-probe-port", &self.readiness_port.to_string()])
            .arg("--cert-file")
            .arg(&self.cert_file)
            .arg("--key-file")
            .arg(&self.key_file)
            .env("KUBEWARDEN_LOG_LEVEL", &self.log_level);
        if let Some(sources) = &self.sources {
            command.arg("--sources-path").arg(sources);
        }
        command
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_names_upstreams_flags() {
        let mut launch = PolicyServerLaunch::on_loopback("/p/policies.yml", "/d", 8443, 8081);
        launch.sources = Some("/p/sources.yml".into());
        let command = launch.command(std::path::Path::new("/bin/policy-server"));
        let args: Vec<String> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args.join(" "),
            "--policies /p/policies.yml --policies-download-dir /d --addr 127.0.0.1 --port 8443 --readiness-probe-port 8081 --cert-file /d/tls.crt --key-file /d/tls.key --sources-path /p/sources.yml"
        );
    }
}
