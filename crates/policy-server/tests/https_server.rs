//! The real policy-server binary, driven over HTTPS with curl: verdicts, response shaping,
//! bad input, policy errors, hostile policies, mutual TLS, certificate rotation and graceful
//! shutdown.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policy-evaluator/tests/fixtures")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A CA and certificates it signs, written as PEM files.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
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

    fn write_ca(&self, path: &Path) {
        std::fs::write(path, self.ca.pem()).expect("write CA");
    }

    /// Writes a certificate for `names` and its key.
    fn issue(&self, names: &[&str], cert: &Path, key: &Path) {
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

struct Server {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ps-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn policies_yml(dir: &Path) -> PathBuf {
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
bad-settings:
  module: file://{f}/reject-by-label.wasm
  settings: {{denied_labels: 3}}
missing-module:
  module: file://{f}/does-not-exist.wasm
loops:
  module: file://{f}/hostile.wasm
  timeoutEvalSeconds: 1
  settings: {{behaviour: loop}}
"#
    );
    let path = dir.join("policies.yml");
    std::fs::write(&path, text).expect("policies.yml");
    path
}

/// Starts the binary with TLS (and mTLS when `client_ca` is given) and waits until ready.
fn start(dir: &Path, client_ca: Option<&Path>, extra: &[&str]) -> Server {
    let port = free_port();
    let readiness = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_policy-server"));
    command
        .arg("--policies")
        .arg(policies_yml(dir))
        .arg("--policies-download-dir")
        .arg(dir)
        .args(["--addr", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--readiness-probe-port",
            &readiness.to_string(),
            "--workers",
            "2",
        ])
        .arg("--cert-file")
        .arg(dir.join("tls.crt"))
        .arg("--key-file")
        .arg(dir.join("tls.key"))
        .args(extra)
        .env("KUBEWARDEN_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(ca) = client_ca {
        command.arg("--client-ca-file").arg(ca);
    }
    let child = command.spawn().expect("policy-server starts");
    let server = Server {
        child,
        dir: dir.to_path_buf(),
        port,
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
        assert!(
            Instant::now() < deadline,
            "policy-server not ready within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// POSTs `body` to `path` over HTTPS, trusting `ca`; returns (HTTP status, body).
fn post(
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
    use std::io::Write;
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

fn review(labels: Value) -> String {
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

fn setup(name: &str) -> (PathBuf, Pki) {
    let dir = temp_dir(name);
    let pki = Pki::new("test-ca");
    pki.write_ca(&dir.join("ca.crt"));
    pki.issue(&["localhost"], &dir.join("tls.crt"), &dir.join("tls.key"));
    (dir, pki)
}

#[test]
fn verdicts_shaping_and_errors_over_https() {
    let (dir, _pki) = setup("verdicts");
    let server = start(&dir, None, &[]);
    let ca = dir.join("ca.crt");

    let (status, body) = post(
        &server,
        &ca,
        "/validate/reject-label",
        &review(json!({"forbidden": "1"})),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["response"]["allowed"], false);
    assert_eq!(
        body["response"]["uid"],
        "1299d386-525b-4032-98ae-1949f69f9cfc"
    );
    assert_eq!(
        body["response"]["status"]["message"],
        "label forbidden is not allowed"
    );

    let (_, body) = post(
        &server,
        &ca,
        "/validate/reject-label",
        &review(json!({"ok": "1"})),
        None,
    );
    assert_eq!(body["response"]["allowed"], true);

    // Monitor mode lets the request in; the audit endpoint still reports the real verdict.
    let (_, body) = post(
        &server,
        &ca,
        "/validate/monitored",
        &review(json!({"forbidden": "1"})),
        None,
    );
    assert_eq!(body["response"]["allowed"], true);
    let (_, body) = post(
        &server,
        &ca,
        "/audit/monitored",
        &review(json!({"forbidden": "1"})),
        None,
    );
    assert_eq!(body["response"]["allowed"], false);

    let (_, body) = post(&server, &ca, "/validate/mutate", &review(json!({})), None);
    assert_eq!(body["response"]["patchType"], "JSONPatch");

    // Policies that cannot run answer with the reason, code 500; the others keep serving.
    let (status, body) = post(
        &server,
        &ca,
        "/validate/bad-settings",
        &review(json!({})),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(body["response"]["allowed"], false);
    assert_eq!(body["response"]["status"]["code"], 500);
    assert!(
        body["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Policy settings are invalid")
    );
    let (_, body) = post(
        &server,
        &ca,
        "/validate/missing-module",
        &review(json!({})),
        None,
    );
    assert!(
        body["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot read")
    );

    // A policy that loops is interrupted after its timeoutEvalSeconds.
    let (_, body) = post(&server, &ca, "/validate/loops", &review(json!({})), None);
    assert_eq!(body["response"]["status"]["code"], 500);
    assert!(
        body["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with(
                "Policy execution interrupted because it exceeded the allowed execution time"
            )
    );
    let (_, body) = post(
        &server,
        &ca,
        "/validate/reject-label",
        &review(json!({})),
        None,
    );
    assert_eq!(
        body["response"]["allowed"], true,
        "other policies keep answering"
    );

    // Raw documents.
    let (_, body) = post(
        &server,
        &ca,
        "/validate_raw/mutate",
        r#"{"request": {"object": {"metadata": {}}}}"#,
        None,
    );
    assert!(body["response"]["patch"].is_string(), "{body}");

    // Bad input gets an HTTP error with a JSON message, never a dropped connection.
    let (status, body) = post(&server, &ca, "/validate/nope", &review(json!({})), None);
    assert_eq!((status, body["status"].as_u64()), (404, Some(404)));
    let (status, body) = post(&server, &ca, "/validate/reject-label", "{not json", None);
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not valid JSON")
    );
    let (status, _) = post(
        &server,
        &ca,
        "/validate/reject-label",
        r#"{"kind": "AdmissionReview"}"#,
        None,
    );
    assert_eq!(status, 400);
    let (status, _) = post(
        &server,
        &ca,
        "/validate/reject-label",
        r#"{"request": {"object": {}}}"#,
        None,
    );
    assert_eq!(status, 400);
}

#[test]
fn oversized_bodies_are_refused() {
    let (dir, _pki) = setup("oversized");
    let server = start(&dir, None, &["--max-request-body-bytes", "1024"]);
    let big = review(json!({"filler": "x".repeat(4096)}));
    let (status, _) = post(
        &server,
        &dir.join("ca.crt"),
        "/validate/reject-label",
        &big,
        None,
    );
    assert_eq!(status, 413);
}

#[test]
fn mutual_tls_refuses_clients_without_a_certificate() {
    let (dir, _pki) = setup("mtls");
    let clients = Pki::new("client-ca");
    clients.write_ca(&dir.join("client-ca.crt"));
    clients.issue(
        &["client"],
        &dir.join("client.crt"),
        &dir.join("client.key"),
    );
    let server = start(&dir, Some(&dir.join("client-ca.crt")), &[]);
    let ca = dir.join("ca.crt");
    let (status, _) = post(
        &server,
        &ca,
        "/validate/reject-label",
        &review(json!({})),
        None,
    );
    assert_eq!(
        status, 0,
        "the handshake fails without a client certificate"
    );
    let (status, body) = post(
        &server,
        &ca,
        "/validate/reject-label",
        &review(json!({})),
        Some((&dir.join("client.crt"), &dir.join("client.key"))),
    );
    assert_eq!(status, 200);
    assert_eq!(body["response"]["allowed"], true);
}

#[test]
fn rotated_certificates_are_picked_up() {
    let (dir, _pki) = setup("rotation");
    let server = start(&dir, None, &[]);
    let (status, _) = post(
        &server,
        &dir.join("ca.crt"),
        "/validate/reject-label",
        &review(json!({})),
        None,
    );
    assert_eq!(status, 200);
    // A new CA signs a new certificate, written over the old files.
    let rotated = Pki::new("rotated-ca");
    rotated.write_ca(&dir.join("new-ca.crt"));
    rotated.issue(&["localhost"], &dir.join("tls.crt"), &dir.join("tls.key"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = post(
            &server,
            &dir.join("new-ca.crt"),
            "/validate/reject-label",
            &review(json!({})),
            None,
        );
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within 20 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let (dir, _pki) = setup("sigterm");
    let mut server = start(&dir, None, &["--shutdown-grace-seconds", "5"]);
    let pid = server.child.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running 15 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
