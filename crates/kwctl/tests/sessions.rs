//! `kwctl run` with host capabilities: calls answered by a real registry, recorded with
//! `--record-host-capabilities-interactions` and answered again from the file with
//! `--replay-host-capabilities-interactions` once the registry is gone; session files in
//! upstream's format for context-aware policies (waPC and Rego), with and without
//! `--allow-context-aware`.

mod common;

use common::*;
use serde_json::{Value, json};

fn answer(output: &std::process::Output) -> Value {
    assert!(output.status.success(), "{}", stderr(output));
    serde_json::from_str(&stdout(output)).expect("JSON")
}

#[test]
fn a_recorded_session_replays_without_the_registry() {
    let dir = scratch("session-record");
    let Some((registry, host, sources)) = registry_with_sources(&dir) else {
        return;
    };
    let image = format!("{host}/policies/accept-all:v1");
    push_fixture(&dir, "accept-all", &format!("registry://{image}"), &sources);
    let request = write(&dir, "r.json", &pod_review(json!({})).to_string());
    let settings = json!({"namespace": "oci", "operation": "v1/manifest_digest", "payload": image})
        .to_string();
    let session = dir.join("session.yml").display().to_string();
    let host_call = fixture("host-call");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            host_call.as_str(),
            "-r",
            request.as_str(),
            "--settings-json",
            settings.as_str(),
            "--sources-path",
            sources.as_str(),
        ];
        args.extend_from_slice(extra);
        kwctl(&dir, &args)
    };

    let live = answer(&run(&["--record-host-capabilities-interactions", &session]));
    assert_eq!(live["allowed"], true, "{live}");
    let digest = live["warnings"][0]
        .as_str()
        .expect("the host's answer")
        .to_string();
    assert!(digest.contains("sha256:"), "{digest}");
    let recorded = std::fs::read_to_string(&session).expect("session written");
    assert!(
        recorded.starts_with("- type: Exchange\n  request: |\n    !OciManifestDigest\n"),
        "{recorded}"
    );

    drop(registry);
    let replayed = answer(&run(&["--replay-host-capabilities-interactions", &session]));
    assert_eq!(replayed["warnings"][0], digest.as_str(), "{replayed}");
    let gone = answer(&run(&[]));
    assert_eq!(gone["allowed"], false, "the registry is gone: {gone}");

    // Another request than the recorded one is refused, naming both.
    let other = json!({"namespace": "oci", "operation": "v1/manifest_digest", "payload": "example.com/other:v1"})
        .to_string();
    let output = kwctl(
        &dir,
        &[
            "run",
            &host_call,
            "-r",
            &request,
            "--settings-json",
            &other,
            "--replay-host-capabilities-interactions",
            &session,
        ],
    );
    let refused = answer(&output);
    let message = refused["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("Replay error: unexpected request")
            && message.contains("example.com/other:v1"),
        "{refused}"
    );
    assert!(
        stderr(&output).contains("have not been replayed"),
        "{}",
        stderr(&output)
    );
}

/// A session as upstream's kwctl records it for a Namespace read.
fn namespace_session(labels: Value) -> String {
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default", "labels": labels}});
    let list = json!({"metadata": {"resourceVersion": "7"}, "items": [namespace]});
    format!(
        "- type: Exchange\n  request: |\n    !KubernetesGetResource\n    api_version: v1\n    kind: Namespace\n    name: default\n    namespace: null\n    disable_cache: false\n  response:\n    type: Success\n    payload: '{namespace}'\n- type: Exchange\n  request: |\n    !KubernetesListResourceAll\n    api_version: v1\n    kind: Namespace\n    label_selector: null\n    field_selector: null\n  response:\n    type: Success\n    payload: '{list}'\n"
    )
}

#[test]
fn context_aware_policies_replay_upstream_sessions_only_when_allowed() {
    let dir = scratch("session-replay");
    let labelled = write(
        &dir,
        "labelled.yml",
        &namespace_session(json!({"team": "a"})),
    );
    let unlabelled = write(&dir, "unlabelled.yml", &namespace_session(json!({})));
    let request = write(&dir, "r.json", &pod_review(json!({})).to_string());
    let settings = json!({"required_namespace_label": "team"}).to_string();
    let run = |policy: &str, session: &str, allow: bool| {
        let module = fixture(policy);
        let mut args = vec![
            "run",
            module.as_str(),
            "-r",
            request.as_str(),
            "--settings-json",
            settings.as_str(),
            "--replay-host-capabilities-interactions",
            session,
        ];
        if allow {
            args.push("--allow-context-aware");
        }
        kwctl(&dir, &args)
    };
    for policy in ["namespace-label", "opa-namespace-label"] {
        assert_eq!(
            answer(&run(policy, &labelled, true))["allowed"],
            true,
            "{policy}"
        );
        let rejected = answer(&run(policy, &unlabelled, true));
        assert_eq!(rejected["allowed"], false, "{policy}");
        assert!(
            rejected["status"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("namespace default lacks the label team")),
            "{policy}: {rejected}"
        );
    }
    // Without --allow-context-aware the waPC policy may not read the Namespace.
    let output = run("namespace-label", &labelled, false);
    let log = stderr(&output);
    assert!(log.contains("--allow-context-aware was not given"), "{log}");
    assert_eq!(output.status.code(), Some(1), "the policy fails: {log}");
    assert!(
        log.contains("not been granted access to Kubernetes v1/Namespace"),
        "{log}"
    );

    // A session file that is not one is named.
    let broken = write(&dir, "broken.yml", "- type: Exchange\n  request: [\n");
    let output = run("namespace-label", &broken, true);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("broken.yml"),
        "{}",
        stderr(&output)
    );
}
