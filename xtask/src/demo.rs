//! `cargo xtask demo`: the main job in one command. Builds the policy-server, starts it over
//! HTTPS on a demo policy, sends one AdmissionReview it rejects and one it accepts, prints the
//! answers and stops the server.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use crate::cluster::cache_root;
use crate::test::run_step;

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn write_certificates(dir: &Path) -> Result<()> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // A subject of its own, so the leaf (rcgen's default subject) does not look self-signed.
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kubewarden-rs demo CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["localhost".to_string()])?.signed_by(&key, &ca)?;
    std::fs::write(dir.join("ca.crt"), ca.pem())?;
    std::fs::write(dir.join("tls.crt"), cert.pem())?;
    std::fs::write(dir.join("tls.key"), key.serialize_pem())?;
    Ok(())
}

fn review(name: &str, labels: &str) -> String {
    format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"demo-{name}","kind":{{"group":"","version":"v1","kind":"Pod"}},"resource":{{"group":"","version":"v1","resource":"pods"}},"operation":"CREATE","namespace":"default","name":"{name}","object":{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{labels}}},"spec":{{"containers":[{{"name":"c","image":"nginx"}}]}}}}}}}}"#
    )
}

fn send(dir: &Path, port: u16, body: &str) -> Result<String> {
    let mut child = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(dir.join("ca.crt"))
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ])
        .arg(format!(
            "https://localhost:{port}/validate/no-forbidden-label"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running curl")?;
    child
        .stdin
        .take()
        .context("curl stdin")?
        .write_all(body.as_bytes())?;
    let output = child.wait_with_output()?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

pub fn run(root: &Path) -> Result<()> {
    run_step(
        "building the policy-server",
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())).args([
            "build",
            "--quiet",
            "-p",
            "policy-server",
        ]),
    )?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), Into::into);
    let binary = target.join("debug/policy-server");
    let dir = cache_root().join("demo");
    std::fs::create_dir_all(&dir)?;
    write_certificates(&dir)?;
    let fixtures = root.join("crates/policy-evaluator/tests/fixtures");
    let policies = std::fs::read_to_string(root.join("demo/policies.yml"))?
        .replace("${FIXTURES}", &fixtures.display().to_string());
    std::fs::write(dir.join("policies.yml"), policies)?;
    let (port, readiness) = (free_port()?, free_port()?);
    println!("==> starting the policy-server on https://localhost:{port} with demo/policies.yml");
    let mut server = Command::new(&binary)
        .arg("--policies")
        .arg(dir.join("policies.yml"))
        .arg("--policies-download-dir")
        .arg(&dir)
        .args([
            "--addr",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--readiness-probe-port",
            &readiness.to_string(),
        ])
        .arg("--cert-file")
        .arg(dir.join("tls.crt"))
        .arg("--key-file")
        .arg(dir.join("tls.key"))
        .env("KUBEWARDEN_LOG_LEVEL", "warn")
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let result = (|| -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("http://127.0.0.1:{readiness}/readiness"))
                .output()?;
            if ready.stdout == b"200" {
                break;
            }
            if Instant::now() > deadline {
                bail!("the policy-server did not become ready within 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("==> a Pod labelled forbidden=true (expected: rejected)");
        println!(
            "{}",
            send(
                &dir,
                port,
                &review("rejected-pod", r#"{"forbidden":"true"}"#)
            )?
        );
        println!("==> a Pod labelled app=web (expected: accepted)");
        println!(
            "{}",
            send(&dir, port, &review("accepted-pod", r#"{"app":"web"}"#))?
        );
        Ok(())
    })();
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    result
}
