//! A real OCI registry (Debian's `docker-registry`) started for a test, on a free loopback
//! port, with TLS when asked.
//!
//! Without `/usr/bin/docker-registry` the registry tests print why and return, unless
//! `KUBEWARDEN_REQUIRE_TEST_SERVERS` is set (as `cargo xtask test` and CI do).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REGISTRY: &str = "/usr/bin/docker-registry";

/// A running registry, stopped when dropped.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    pub port: u16,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on (for a server a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// Starts a registry storing under `dir`, with TLS when `tls` gives (cert, key); `None`
/// (after saying why) when the registry is not installed and the tests may skip.
pub fn start_registry(dir: &Path, tls: Option<(&Path, &Path)>) -> Option<Registry> {
    if !Path::new(REGISTRY).is_file() {
        if std::env::var_os("KUBEWARDEN_REQUIRE_TEST_SERVERS").is_some() {
            panic!("{REGISTRY} is missing: apt-get install docker-registry");
        }
        eprintln!("skipped: {REGISTRY} is missing (apt-get install docker-registry)");
        return None;
    }
    let port = free_port();
    let storage = dir.join(format!("registry-{port}"));
    let tls_section = tls.map_or(String::new(), |(cert, key)| {
        format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        )
    });
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{tls_section}",
        storage.display()
    );
    let config_path = dir.join(format!("registry-{port}.yml"));
    std::fs::write(&config_path, config).expect("registry config");
    let child = Command::new(REGISTRY)
        .arg("serve")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("registry starts");
    let registry = Registry { child, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "registry not listening after 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(registry)
}
