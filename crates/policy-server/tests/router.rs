//! The webhook API in-process: policies loaded by `PolicyServer::load` and requests sent
//! through its router with `tower`'s `oneshot`, no listener, no TLS, no process. What needs a
//! real transport (TLS, mutual TLS, signals, the binary's flags) is in `https_server.rs`.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{load_in_process, policies_yml, review, temp_dir};
use http_body_util::BodyExt;
use policy_server::PolicyServer;
use serde_json::{Value, json};
use tower::ServiceExt;

async fn server(name: &str) -> PolicyServer {
    let dir = temp_dir(name);
    let policies = policies_yml(&dir);
    load_in_process(&dir, &policies, &[]).await
}

/// POSTs `body` to `path`; the status and the JSON answer.
async fn post(server: &PolicyServer, path: &str, body: impl Into<Body>) -> (StatusCode, Value) {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(body.into())
        .expect("request");
    let response = server.router().oneshot(request).await.expect("answered");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let answer = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{path}: not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, answer)
}

fn message(answer: &Value) -> &str {
    answer["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_and_response_shaping() {
    let server = server("router-verdicts").await;

    let (status, answer) = post(
        &server,
        "/validate/reject-label",
        review(json!({"forbidden": "1"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(
        answer["response"]["uid"],
        "1299d386-525b-4032-98ae-1949f69f9cfc"
    );
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(message(&answer), "label forbidden is not allowed");
    // Each endpoint's verdict: the policy's own on /audit, shaped by the policy's mode on
    // /validate (monitor admits), with the policy's custom message replacing its own.
    for (path, labels, allowed, expected_message) in [
        ("/validate/reject-label", json!({"ok": "1"}), true, ""),
        ("/validate/monitored", json!({"forbidden": "1"}), true, ""),
        (
            "/audit/monitored",
            json!({"forbidden": "1"}),
            false,
            "label forbidden is not allowed",
        ),
        (
            "/validate/custom-message",
            json!({"forbidden": "1"}),
            false,
            "refused by the platform team",
        ),
    ] {
        let (_, answer) = post(&server, path, review(labels)).await;
        assert_eq!(answer["response"]["allowed"], allowed, "{path}: {answer}");
        assert_eq!(message(&answer), expected_message, "{path}: {answer}");
    }

    // A mutation is a patch only where the policy may mutate.
    let (_, answer) = post(&server, "/validate/mutate", review(json!({}))).await;
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    let (_, answer) = post(&server, "/validate/mutate-not-allowed", review(json!({}))).await;
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    assert!(answer["response"].get("patch").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_unloadable_policies_get_clear_answers() {
    let server = server("router-errors").await;

    // Unknown routes and policies: JSON errors naming what exists.
    let (status, answer) = post(&server, "/nowhere", review(json!({}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .contains("/validate/<policy id>"),
        "{answer}"
    );
    let (status, _) = post(&server, "/validate/no-such-policy", review(json!({}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A body that is not an AdmissionReview is refused with 400 and the reason.
    for body in ["not json", "{}", r#"{"request": {"uid": 7}}"#] {
        let (status, answer) = post(&server, "/validate/reject-label", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(
            !answer["message"].as_str().unwrap_or_default().is_empty(),
            "{body}: {answer}"
        );
    }

    // A policy that could not be loaded answers code 500 with why; the others keep serving.
    let (status, answer) = post(&server, "/validate/bad-settings", review(json!({}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["status"]["code"], 500);
    assert!(
        message(&answer).contains("Policy settings are invalid"),
        "{answer}"
    );
    let (_, answer) = post(&server, "/validate/missing-module", review(json!({}))).await;
    assert_eq!(answer["response"]["status"]["code"], 500);
    let (_, answer) = post(
        &server,
        "/validate/reject-label",
        review(json!({"ok": "1"})),
    )
    .await;
    assert_eq!(answer["response"]["allowed"], true);

    // What loading found, as GET /status reports it.
    let loaded = server.policies();
    assert!(loaded["reject-label"].load_status().loaded);
    assert!(!loaded["bad-settings"].load_status().loaded);
    assert!(
        loaded["rego-gatekeeper-package"]
            .load_status()
            .result_not_understood
            .is_some()
    );
}
