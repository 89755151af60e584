//! The real policy-server binary, driven over HTTPS with curl: what needs the transport or
//! the process (TLS versions and ciphers, mutual TLS, body limits, certificate rotation,
//! in-place reload under load, signals, flags, metrics, daemon mode). The API's logic
//! (verdicts, shaping, bad input, policy errors) is tested in-process in `router.rs`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// What the transport adds to the API (whose logic `router.rs` tests in-process): answers
/// over HTTPS, errors as JSON rather than dropped connections, and the readiness port's
/// `/status`.
#[test]
fn verdicts_errors_and_status_over_https() {
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

    // The readiness port tells which policies loaded and why the others did not.
    let output = Command::new("curl")
        .args(["-sf"])
        .arg(format!("http://127.0.0.1:{}/status", server.readiness_port))
        .output()
        .expect("curl");
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(status["loaded"], true, "{status}");
    let loaded = &status["policies"]["reject-label"];
    assert_eq!(loaded["loaded"], true, "{loaded}");
    assert_eq!(
        loaded["digest"].as_str().map(str::len),
        Some(64),
        "the SHA-256 of the entry served: {loaded}"
    );
    let bad = &status["policies"]["bad-settings"];
    assert_eq!(
        (&bad["loaded"], &bad["reason"]),
        (&json!(false), &json!("SettingsInvalid"))
    );
    assert!(
        bad["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Policy settings are invalid"),
        "{bad}"
    );
    assert_eq!(
        status["policies"]["missing-module"]["reason"],
        "ModuleUnavailable"
    );
    let package = &status["policies"]["rego-gatekeeper-package"];
    assert_eq!(package["loaded"], true, "{package}");
    assert!(
        package["resultNotUnderstood"]
            .as_str()
            .unwrap_or_default()
            .starts_with("an object with the members [violation]"),
        "{package}"
    );
}

/// Whether an openssl client offering only `args` (a version or a cipher) completes a
/// handshake with the server. The client's own security level is lowered so that a refusal
/// comes from the server.
fn handshake_succeeds(server: &Server, args: &[&str]) -> bool {
    Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{}", server.port),
        ])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs")
        .success()
}

#[test]
fn only_tls_1_2_and_1_3_with_aead_ciphers_are_accepted() {
    let (dir, _pki) = setup("tls-versions");
    let server = start(&dir, None, &[]);
    assert!(handshake_succeeds(&server, &["-tls1_3"]));
    assert!(handshake_succeeds(&server, &["-tls1_2"]));
    for old in ["-tls1_1", "-tls1"] {
        assert!(
            !handshake_succeeds(&server, &[old, "-cipher", "DEFAULT:@SECLEVEL=0"]),
            "{old} must be refused"
        );
    }
    // TLS 1.2 with ECDHE and AES-GCM works with the same kind of client arguments...
    assert!(handshake_succeeds(
        &server,
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES128-GCM-SHA256:@SECLEVEL=0"
        ]
    ));
    // ...while TLS 1.2 without forward secrecy or with CBC is refused.
    for cipher in [
        "AES128-SHA",
        "AES256-GCM-SHA384",
        "ECDHE-RSA-AES128-SHA",
        "ECDHE-ECDSA-AES128-SHA",
    ] {
        assert!(
            !handshake_succeeds(
                &server,
                &["-tls1_2", "-cipher", &format!("{cipher}:@SECLEVEL=0")]
            ),
            "{cipher} must be refused"
        );
    }
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
fn policies_reload_in_place_under_load_without_a_failed_request() {
    let (dir, _pki) = setup("reload-under-load");
    let f = fixtures().display().to_string();
    let policies_text = |denied: &str| {
        format!(
            "labels:\n  module: file://{f}/reject-by-label.wasm\n  settings: {{denied_labels: [{denied}]}}\n"
        )
    };
    let policies = write(&dir, "policies.yml", &policies_text("first"));
    let server = start_with(&dir, &policies, None, &["--reload-policies"]);
    let ca = dir.join("ca.crt");
    assert_eq!(
        verdict(&server, &ca, "labels", json!({"first": "1"}))["allowed"],
        false
    );
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (answered, failures) = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            let mut answered = 0;
            let mut failures = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, body) = post(
                    &server,
                    &ca,
                    "/validate/labels",
                    &review(json!({"steady": "1"})),
                    None,
                );
                if status == 200 && body["response"]["allowed"] == true {
                    answered += 1;
                } else {
                    failures.push(format!("{status}: {body}"));
                }
            }
            (answered, failures)
        });
        // kubelet swaps a mounted ConfigMap's files whole; so does a rename.
        write(&dir, "policies.yml.next", &policies_text("second"));
        std::fs::rename(dir.join("policies.yml.next"), &policies).expect("rename");
        let deadline = Instant::now() + Duration::from_secs(30);
        while verdict(&server, &ca, "labels", json!({"second": "1"}))["allowed"] != false {
            assert!(
                Instant::now() < deadline,
                "the new settings were not served within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        load.join().expect("the load thread")
    });
    assert!(
        failures.is_empty(),
        "failed during the reload: {failures:#?}"
    );
    assert!(answered > 0);
    assert_eq!(
        verdict(&server, &ca, "labels", json!({"first": "1"}))["allowed"],
        true,
        "the old settings are gone"
    );
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    assert_eq!(
        log.matches("ready to serve").count(),
        1,
        "one process, never restarted: {log}"
    );
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

#[test]
fn default_download_dir_is_the_working_directory() {
    // No --policies-download-dir: the default "." must work (the compile cache needs an
    // absolute path, which the server derives).
    let (dir, _pki) = setup("default-download-dir");
    let readiness = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_policy-server"))
        .current_dir(&dir)
        .arg("--policies")
        .arg(policies_yml(&dir))
        .args(["--addr", "127.0.0.1", "--port", &free_port().to_string()])
        .args(["--readiness-probe-port", &readiness.to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the server exited"
        );
        let ready = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("http://127.0.0.1:{readiness}/readiness"))
            .output()
            .expect("curl");
        if ready.stdout == b"200" {
            break;
        }
        assert!(Instant::now() < deadline, "not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(dir.join("compile-cache").is_dir());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn metrics_count_and_time_evaluations_with_upstream_labels() {
    let (dir, _pki) = setup("metrics");
    let metrics_port = free_port();
    let server = start(
        &dir,
        None,
        &[
            "--enable-metrics",
            "--metrics-port",
            &metrics_port.to_string(),
        ],
    );
    let ca = dir.join("ca.crt");
    verdict(&server, &ca, "reject-label", json!({"forbidden": "1"}));
    verdict(&server, &ca, "reject-label", json!({"forbidden": "1"}));
    verdict(&server, &ca, "monitored", json!({"forbidden": "1"}));
    let output = Command::new("curl")
        .args(["-sS", &format!("http://127.0.0.1:{metrics_port}/metrics")])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&output.stdout);
    let series = |policy: &str, mode: &str, accepted: bool, code: &str| {
        format!(
            r#"{{accepted="{accepted}",error_code="{code}",mutated="false",policy_mode="{mode}",policy_name="{policy}",request_origin="validate",resource_kind="Pod",resource_namespace="default",resource_request_operation="CREATE"}}"#
        )
    };
    // The policy's own code: it rejects with 403.
    let rejected = series("reject-label", "protect", false, "403");
    for line in [
        format!("kubewarden_policy_evaluations_total{rejected} 2"),
        format!("kubewarden_policy_evaluation_latency_milliseconds_count{rejected} 2"),
        // Monitor mode counts what the API server was told.
        format!(
            "kubewarden_policy_evaluations_total{} 1",
            series("monitored", "monitor", true, "")
        ),
        r#"kubewarden_policy_server_http_requests_total{endpoint="validate",status="200"} 3"#
            .to_string(),
        "kubewarden_policy_server_workers 2".to_string(),
        "kubewarden_policy_server_workers_busy 0".to_string(),
        "kubewarden_policy_server_evaluations_waiting 0".to_string(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing in:\n{text}"
        );
    }
}

#[test]
fn daemon_mode_detaches_and_pprof_is_refused_with_the_reason() {
    let (dir, _pki) = setup("daemon");
    let readiness = free_port();
    let pid_file = dir.join("policy-server.pid");
    let status = Command::new(env!("CARGO_BIN_EXE_policy-server"))
        .current_dir(&dir)
        .arg("--policies")
        .arg(policies_yml(&dir))
        .args(["--addr", "127.0.0.1", "--port", &free_port().to_string()])
        .args(["--readiness-probe-port", &readiness.to_string()])
        .args(["--daemon", "--daemon-stderr-file", "daemon.log"])
        .arg("--daemon-pid-file")
        .arg(&pid_file)
        .arg("--enable-pprof")
        .status()
        .expect("starts");
    // The parent returns at once; the detached child serves, and writes the pid file itself,
    // so the file may come a moment after the parent has gone.
    assert!(status.success(), "{status}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid = loop {
        match std::fs::read_to_string(&pid_file) {
            Ok(pid) if !pid.trim().is_empty() => break pid.trim().to_string(),
            _ => {
                assert!(
                    Instant::now() < deadline,
                    "the daemon wrote no pid file in 20 s"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    let get = |path: &str| {
        let output = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}"])
            .arg(format!("http://127.0.0.1:{readiness}{path}"))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !get("/readiness").ends_with("200") {
        assert!(Instant::now() < deadline, "the daemon never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let profile = get("/debug/pprof/cpu");
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(profile.ends_with("501"), "{profile}");
    assert!(profile.contains("no in-process profiler"), "{profile}");
    let log = std::fs::read_to_string(dir.join("daemon.log")).expect("the daemon's log");
    assert!(log.contains("policies loaded"), "{log}");
}
