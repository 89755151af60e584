//! Helpers shared by the policy-server tests: certificates, starting the real binary, curl.

#![allow(dead_code)]

pub mod registry;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::{Value, json};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policy-evaluator/tests/fixtures")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A CA and certificates it signs, written as PEM files.
pub struct Pki {
    pub ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        Pki {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key"))
                .expect("CA"),
        }
    }

    pub fn write_ca(&self, path: &Path) {
        std::fs::write(path, self.ca.pem()).expect("write CA");
    }

    /// Writes a certificate for `names` and its key.
    pub fn issue(&self, names: &[&str], cert: &Path, key: &Path) {
        let key_pair = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let signed = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key_pair, &self.ca)
            .expect("sign");
        std::fs::write(cert, signed.pem()).expect("write cert");
        std::fs::write(key, key_pair.serialize_pem()).expect("write key");
    }
}

pub struct Server {
    pub child: Child,
    pub dir: PathBuf,
    pub port: u16,
    pub readiness_port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ps-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

pub fn policies_yml(dir: &Path) -> PathBuf {
    let f = fixtures().display().to_string();
    let text = format!(
        r#"
reject-label:
  module: file://{f}/reject-by-label.wasm
  settings: {{denied_labels: [forbidden]}}
monitored:
  module: file://{f}/reject-by-label.wasm
  policyMode: monitor
  settings: {{denied_labels: [forbidden]}}
mutate:
  module: file://{f}/mutate-add-label.wasm
  allowedToMutate: true
mutate-not-allowed:
  module: file://{f}/mutate-add-label.wasm
custom-message:
  module: file://{f}/reject-by-label.wasm
  message: refused by the platform team
  settings: {{denied_labels: [forbidden]}}
bad-settings:
  module: file://{f}/reject-by-label.wasm
  settings: {{denied_labels: 3}}
missing-module:
  module: file://{f}/does-not-exist.wasm
loops:
  module: file://{f}/hostile.wasm
  timeoutEvalSeconds: 1
  settings: {{behaviour: loop}}
rego-opa:
  module: file://{f}/opa-reject-by-label.wasm
  settings: {{denied_labels: [forbidden]}}
rego-gatekeeper:
  module: file://{f}/gatekeeper-reject-by-label.wasm
  settings: {{denied_labels: [forbidden]}}
rego-gatekeeper-package:
  module: file://{f}/gatekeeper-required-labels-package.wasm
  settings: {{labels: [{{key: owner}}]}}
"#
    );
    let path = dir.join("policies.yml");
    std::fs::write(&path, text).expect("policies.yml");
    path
}

/// Loads the policies of `policies` in-process (no listener, no TLS), downloads in `dir`,
/// two workers, plus the `extra` flags.
pub async fn load_in_process(
    dir: &Path,
    policies: &Path,
    extra: &[&str],
) -> policy_server::PolicyServer {
    use clap::Parser as _;
    let mut args: Vec<std::ffi::OsString> = vec![
        "policy-server".into(),
        "--policies".into(),
        policies.into(),
        "--policies-download-dir".into(),
        dir.into(),
        "--workers".into(),
        "2".into(),
    ];
    args.extend(extra.iter().map(Into::into));
    let config = policy_server::Config::try_parse_from(args).expect("flags");
    policy_server::PolicyServer::load(&config, policy_server::Metrics::new().expect("metrics"))
        .await
        .expect("loads")
}

/// Starts the binary with TLS (and mTLS when `client_ca` is given) and waits until ready.
pub fn start(dir: &Path, client_ca: Option<&Path>, extra: &[&str]) -> Server {
    start_with(dir, &policies_yml(dir), client_ca, extra)
}

/// Starts the binary on the given policies.yml; on the local control plane (cluster tests) it
/// reaches the API server like a pod would.
pub fn start_with(dir: &Path, policies: &Path, client_ca: Option<&Path>, extra: &[&str]) -> Server {
    let kubeconfig = std::env::var_os("KUBEWARDEN_TEST_KUBECONFIG").map(PathBuf::from);
    start_with_kubeconfig(dir, policies, client_ca, extra, kubeconfig.as_deref())
}

/// Starts the binary on the given policies.yml and kubeconfig (none: no Kubernetes).
pub fn start_with_kubeconfig(
    dir: &Path,
    policies: &Path,
    client_ca: Option<&Path>,
    extra: &[&str],
    kubeconfig: Option<&Path>,
) -> Server {
    start_with_env(dir, policies, client_ca, extra, kubeconfig, &[])
}

/// As [`start_with_kubeconfig`], with extra environment variables for the server.
pub fn start_with_env(
    dir: &Path,
    policies: &Path,
    client_ca: Option<&Path>,
    extra: &[&str],
    kubeconfig: Option<&Path>,
    env: &[(&str, &str)],
) -> Server {
    let port = free_port();
    let readiness = free_port();
    let launch =
        api_types::config::launch::PolicyServerLaunch::on_loopback(policies, dir, port, readiness);
    let mut command = launch.command(Path::new(env!("CARGO_BIN_EXE_policy-server")));
    command
        .args(["--workers", "2"])
        .args(extra)
        .env_remove("KUBECONFIG")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("server.log")).expect("log file"));
    if let Some(ca) = client_ca {
        command.arg("--client-ca-file").arg(ca);
    }
    if let Some(kubeconfig) = kubeconfig {
        command.env("KUBECONFIG", kubeconfig);
    }
    command.envs(env.iter().copied());
    let child = command.spawn().expect("policy-server starts");
    let mut server = Server {
        child,
        dir: dir.to_path_buf(),
        port,
        readiness_port: readiness,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("http://127.0.0.1:{readiness}/readiness"))
            .output()
            .expect("curl");
        if status.stdout == b"200" {
            return server;
        }
        let exited = server.child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            panic!("policy-server not ready (exit status {exited:?}); its log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// POSTs `body` to `path` over HTTPS, trusting `ca`; returns (HTTP status, body).
pub fn post(
    server: &Server,
    ca: &Path,
    path: &str,
    body: &str,
    client: Option<(&Path, &Path)>,
) -> (u16, Value) {
    let mut command = Command::new("curl");
    command
        .args(["-s", "-w", "\n%{http_code}", "--cacert"])
        .arg(ca)
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ])
        .arg(format!("https://localhost:{}{path}", server.port))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    if let Some((cert, key)) = client {
        command.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let mut child = command.spawn().expect("curl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write body");
    let output = child.wait_with_output().expect("curl output");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

pub fn review(labels: Value) -> String {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "1299d386-525b-4032-98ae-1949f69f9cfc",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": "default",
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": labels}}
        }
    })
    .to_string()
}

pub fn setup(name: &str) -> (PathBuf, Pki) {
    let dir = temp_dir(name);
    let pki = Pki::new("test-ca");
    pki.write_ca(&dir.join("ca.crt"));
    pki.issue(&["localhost"], &dir.join("tls.crt"), &dir.join("tls.key"));
    (dir, pki)
}

/// Writes `text` to `dir/name`.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// The AdmissionResponse of `policy` for a Pod with `labels`.
pub fn verdict(
    server: &Server,
    ca: &Path,
    policy: &str,
    labels: serde_json::Value,
) -> serde_json::Value {
    let (status, body) = post(
        server,
        ca,
        &format!("/validate/{policy}"),
        &review(labels),
        None,
    );
    assert_eq!(status, 200, "{body}");
    body["response"].clone()
}
