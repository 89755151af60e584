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

    // Rego policies in the OPA and Gatekeeper modes.
    for policy in ["rego-opa", "rego-gatekeeper"] {
        let path = format!("/validate/{policy}");
        let (status, answer) = post(&server, &path, review(json!({"forbidden": "1"}))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["response"]["allowed"], false, "{policy}: {answer}");
        assert_eq!(
            message(&answer),
            "label forbidden is not allowed",
            "{policy}"
        );
        let (_, answer) = post(&server, &path, review(json!({"ok": "1"}))).await;
        assert_eq!(answer["response"]["allowed"], true, "{policy}: {answer}");
    }
    // A Gatekeeper module built with its package as the entrypoint answers an object, which
    // upstream reads as "no violations": admitted.
    let (_, answer) = post(
        &server,
        "/validate/rego-gatekeeper-package",
        review(json!({"app": "x"})),
    )
    .await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_documents_are_shaped_as_validate() {
    let server = server("router-raw").await;
    let (_, answer) = post(
        &server,
        "/validate_raw/mutate",
        r#"{"request": {"object": {"metadata": {}}}}"#,
    )
    .await;
    assert!(answer["response"]["patch"].is_string(), "{answer}");
    // Shaped like /validate, as upstream does: monitor mode, allowedToMutate, custom message.
    let labelled = r#"{"request": {"object": {"metadata": {"labels": {"forbidden": "1"}}}}}"#;
    let (_, answer) = post(&server, "/validate_raw/monitored", labelled).await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let (_, answer) = post(&server, "/validate_raw/reject-label", labelled).await;
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    let (_, answer) = post(&server, "/validate_raw/custom-message", labelled).await;
    assert_eq!(message(&answer), "refused by the platform team", "{answer}");
    assert_eq!(
        answer["response"]["status"]["details"]["causes"][0]["message"],
        "label forbidden is not allowed"
    );
    let (_, answer) = post(
        &server,
        "/validate_raw/mutate-not-allowed",
        r#"{"request": {"object": {"metadata": {}}}}"#,
    )
    .await;
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    assert!(answer["response"]["patch"].is_null(), "{answer}");
    assert!(
        message(&answer).contains("configured to not allow mutations"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_policy_is_interrupted_and_the_others_keep_answering() {
    let server = server("router-loop").await;
    let (_, answer) = post(&server, "/validate/loops", review(json!({}))).await;
    assert_eq!(answer["response"]["status"]["code"], 500);
    assert!(
        message(&answer).starts_with(
            "Policy execution interrupted because it exceeded the allowed execution time"
        ),
        "{answer}"
    );
    let (_, answer) = post(&server, "/validate/reject-label", review(json!({}))).await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
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
    for body in [
        "not json",
        "{}",
        r#"{"request": {"uid": 7}}"#,
        r#"{"kind": "AdmissionReview"}"#,
        r#"{"request": {"object": {}}}"#,
    ] {
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
    assert!(message(&answer).contains("cannot read"), "{answer}");
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
