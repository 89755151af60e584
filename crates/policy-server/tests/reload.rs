//! In-place reloading in-process: `PolicyServer::reload` after the policies file changed, the
//! verdicts through the router and what `load_status` says. The binary's file watching under
//! load is tested in `https_server.rs`.

mod common;

use std::path::{Path, PathBuf};

use api_types::config::PoliciesConfig;
use api_types::load_status::LoadFailureReason;
use axum::body::Body;
use axum::http::Request;
use common::{fixtures, load_in_process, review, temp_dir};
use http_body_util::BodyExt;
use policy_server::{LoadSummary, PolicyServer, ReloadError};
use serde_json::{Value, json};
use tower::ServiceExt;

fn write_policies(path: &Path, text: &str) {
    let f = fixtures().display().to_string();
    std::fs::write(path, text.replace("{f}", &f)).expect("policies.yml");
}

async fn server(name: &str, text: &str) -> (PolicyServer, PathBuf) {
    let dir = temp_dir(name);
    let policies = dir.join("policies.yml");
    write_policies(&policies, text);
    let server = load_in_process(&dir, &policies, &["--reload-policies"]).await;
    (server, policies)
}

/// `allowed` of the answer of `/validate/{policy}` for a Pod with `labels`, or the HTTP status
/// when there is no AdmissionReview answer.
async fn allowed(server: &PolicyServer, policy: &str, labels: Value) -> Result<bool, u16> {
    let request = Request::post(format!("/validate/{policy}"))
        .header("content-type", "application/json")
        .body(Body::from(review(labels)))
        .expect("request");
    let response = server.router().oneshot(request).await.expect("answered");
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    answer["response"]["allowed"].as_bool().ok_or(status)
}

fn digest_of(text: &str, id: &str) -> String {
    let f = fixtures().display().to_string();
    let config = PoliciesConfig::parse(&text.replace("{f}", &f)).expect("parses");
    config.0[id].digest()
}

const FIRST: &str = r#"
labels:
  module: file://{f}/reject-by-label.wasm
  settings: {denied_labels: [forbidden]}
steady:
  module: file://{f}/accept-all.wasm
"#;

const NEW_SETTINGS_AND_POLICIES: &str = r#"
labels:
  module: file://{f}/reject-by-label.wasm
  settings: {denied_labels: [other]}
added:
  module: file://{f}/reject-by-label.wasm
  settings: {denied_labels: [added]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_new_settings_and_adds_and_removes_policies() {
    let (server, path) = server("reload-switch", FIRST).await;
    assert_eq!(
        allowed(&server, "labels", json!({"forbidden": "1"})).await,
        Ok(false)
    );
    let status = server.load_status();
    assert_eq!(
        status.policies["labels"].digest.as_deref(),
        Some(digest_of(FIRST, "labels").as_str())
    );

    write_policies(&path, NEW_SETTINGS_AND_POLICIES);
    let summary = server.reload().await.expect("reloads");
    assert_eq!(
        summary,
        LoadSummary {
            kept: 0,
            loaded: 2,
            failed: 0,
            rejected_updates: 0
        }
    );
    assert_eq!(
        allowed(&server, "labels", json!({"forbidden": "1"})).await,
        Ok(true),
        "the old settings no longer apply"
    );
    assert_eq!(
        allowed(&server, "labels", json!({"other": "1"})).await,
        Ok(false)
    );
    assert_eq!(
        allowed(&server, "added", json!({"added": "1"})).await,
        Ok(false)
    );
    assert_eq!(
        allowed(&server, "steady", json!({})).await,
        Err(404),
        "a policy no longer configured is gone"
    );
    let status = server.load_status();
    assert_eq!(
        status.policies.keys().collect::<Vec<_>>(),
        ["added", "labels"]
    );
    assert_eq!(
        status.policies["labels"].digest.as_deref(),
        Some(digest_of(NEW_SETTINGS_AND_POLICIES, "labels").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_policy_is_kept_as_it_is() {
    let (server, path) = server("reload-keep", FIRST).await;
    let before = server.policies()["steady"].clone();
    let changed = FIRST.replace("[forbidden]", "[forbidden, other]");
    write_policies(&path, &changed);
    let summary = server.reload().await.expect("reloads");
    assert_eq!((summary.kept, summary.loaded), (1, 1));
    assert!(
        std::sync::Arc::ptr_eq(&before, &server.policies()["steady"]),
        "the same loaded policy, warm instances included"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_change_keeps_the_previous_version_serving_and_says_why() {
    let (server, path) = server("reload-bad", FIRST).await;
    let bad = FIRST.replace("{denied_labels: [forbidden]}", "{denied_labels: 3}");
    write_policies(&path, &bad);
    let summary = server.reload().await.expect("reloads");
    assert_eq!(summary.rejected_updates, 1);
    assert_eq!(
        allowed(&server, "labels", json!({"forbidden": "1"})).await,
        Ok(false),
        "the previous settings go on"
    );
    let status = server.load_status();
    let labels = &status.policies["labels"];
    assert!(labels.loaded);
    assert_eq!(
        labels.digest.as_deref(),
        Some(digest_of(FIRST, "labels").as_str()),
        "the version served is the previous one"
    );
    let rejected = labels.rejected_update.as_ref().expect("rejected update");
    assert_eq!(rejected.reason, LoadFailureReason::SettingsInvalid);
    assert_eq!(rejected.digest, digest_of(&bad, "labels"));
    assert!(
        rejected.message.contains("settings"),
        "{}",
        rejected.message
    );

    // A new policy that cannot load has no previous version: it fails as at start-up.
    let bad_new = format!("{FIRST}broken:\n  module: file://{{f}}/does-not-exist.wasm\n");
    write_policies(&path, &bad_new);
    let summary = server.reload().await.expect("reloads");
    assert_eq!(
        (summary.kept, summary.loaded, summary.failed),
        (2, 0, 1),
        "back to the version served: nothing to load"
    );
    let status = server.load_status();
    assert!(status.policies["labels"].rejected_update.is_none());
    assert_eq!(
        status.policies["broken"].reason,
        Some(LoadFailureReason::ModuleUnavailable)
    );
    assert_eq!(
        allowed(&server, "broken", json!({})).await,
        Ok(false),
        "answered with the reason"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_file_changes_nothing_and_is_reported() {
    let (server, path) = server("reload-unreadable", FIRST).await;
    std::fs::write(&path, "labels: [this is not a policy").expect("write");
    let error = server.reload().await.expect_err("not a policies file");
    assert!(matches!(error, ReloadError::Parse { .. }), "{error}");
    let status = server.load_status();
    assert!(
        status
            .reload_error
            .as_deref()
            .is_some_and(|e| e.contains("not a valid policies file")),
        "{status:?}"
    );
    assert_eq!(
        allowed(&server, "labels", json!({"forbidden": "1"})).await,
        Ok(false)
    );
    write_policies(&path, FIRST);
    server.reload().await.expect("reloads");
    assert_eq!(server.load_status().reload_error, None);
}
