//! The `kwctl` binary on the committed fixture policies: every subcommand's output, each
//! execution mode of `run`, and bad input answered with one line and exit code 1 (2 for
//! usage errors, as clap and upstream do).

mod common;

use common::*;
use serde_json::{Value, json};

#[test]
fn run_prints_the_policy_answer_in_every_execution_mode() {
    let dir = scratch("run");
    let denied = write(
        &dir,
        "denied.json",
        &pod_review(json!({"forbidden": "1"})).to_string(),
    );
    let fine = write(
        &dir,
        "fine.json",
        &pod_review(json!({"app": "x"})).to_string(),
    );
    for module in [
        "reject-by-label",
        "wasi-go",
        "opa-reject-by-label",
        "gatekeeper-reject-by-label",
    ] {
        let module = fixture(module);
        let args = |request: &str| {
            vec![
                "run".to_string(),
                module.clone(),
                "-r".to_string(),
                request.to_string(),
                "--settings-json".to_string(),
                r#"{"denied_labels": ["forbidden"]}"#.to_string(),
            ]
        };
        let output = kwctl(
            &dir,
            &args(&denied).iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert!(output.status.success(), "{module}: {}", stderr(&output));
        let text = stdout(&output);
        assert_eq!(text.lines().count(), 1, "one line: {text}");
        let answer: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(answer["uid"], "kwctl-test", "{module}: {answer}");
        assert_eq!(answer["allowed"], false, "{module}: {answer}");
        assert!(
            answer["status"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("forbidden")),
            "{module}: {answer}"
        );
        assert!(
            answer.get("auditAnnotations").is_some() && answer.get("warnings").is_some(),
            "always present, as upstream: {answer}"
        );
        let output = kwctl(
            &dir,
            &args(&fine).iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let answer: Value = serde_json::from_str(&stdout(&output)).expect("JSON");
        assert_eq!(answer["allowed"], true, "{module}: {answer}");
    }
    // A request may be a bare AdmissionRequest, and settings may come from a YAML file.
    let request = write(
        &dir,
        "request.json",
        &pod_review(json!({"other": "1"}))["request"].to_string(),
    );
    let settings = write(&dir, "settings.yml", "denied_labels: [other]\n");
    let output = kwctl(
        &dir,
        &[
            "run",
            &fixture("reject-by-label"),
            "-r",
            &request,
            "-s",
            &settings,
        ],
    );
    let answer: Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    assert_eq!(answer["allowed"], false, "{answer}");
    // A mutation comes back as a JSONPatch.
    let output = kwctl(&dir, &["run", &fixture("mutate-add-label"), "-r", &fine]);
    let answer: Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    assert_eq!(answer["patchType"], "JSONPatch", "{answer}");
}

#[test]
fn bad_input_gets_one_clear_line_and_a_failure_code() {
    let dir = scratch("bad");
    let request = write(&dir, "r.json", &pod_review(json!({})).to_string());
    let not_wasm = write(&dir, "not.wasm", "hello");
    let reject = fixture("reject-by-label");
    let cases: [(Vec<&str>, &str); 5] = [
        (
            vec!["run", "/does/not/exist.wasm", "-r", &request],
            "Cannot find policy with uri: /does/not/exist.wasm",
        ),
        (
            vec!["run", &not_wasm, "-r", &request],
            "not valid WebAssembly",
        ),
        (
            vec!["run", &reject, "-r", "/no/request.json"],
            "Error opening request file /no/request.json",
        ),
        (
            vec![
                "run",
                &reject,
                "-r",
                &request,
                "--settings-json",
                r#"{"denied_labels": 3}"#,
            ],
            "Provided settings are not valid",
        ),
        (
            vec!["inspect", "registry://example.invalid/p:v1"],
            "Cannot find policy with uri: registry://example.invalid/p:v1",
        ),
    ];
    for (args, expected) in cases {
        let output = kwctl(&dir, &args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let text = stderr(&output);
        assert!(text.starts_with("Error: "), "{args:?}: {text}");
        assert!(text.contains(expected), "{args:?}: {text}");
        assert!(stdout(&output).is_empty(), "{args:?}");
    }
    let output = kwctl(
        &dir,
        &[
            "run",
            &fixture("reject-by-label"),
            "-r",
            &request,
            "-s",
            "a",
            "--settings-json",
            "{}",
        ],
    );
    assert_eq!(
        output.status.code(),
        Some(2),
        "conflicting flags are a usage error"
    );
}

#[test]
fn annotate_then_inspect_and_scaffold() {
    let dir = scratch("annotate");
    let metadata = write(
        &dir,
        "metadata.yml",
        "rules:\n- apiGroups: ['']\n  apiVersions: [v1]\n  resources: [pods]\n  operations: [CREATE]\nmutating: false\nbackgroundAudit: false\nexecutionMode: kubewarden-wapc\nannotations:\n  io.kubewarden.policy.title: no-forbidden-labels\n  io.kubewarden.policy.author: Platform team\n  io.kubewarden.policy.severity: medium\n  team: platform\n",
    );
    let usage = write(&dir, "usage.md", "Refuses pods with denied labels.\n");
    let annotated = dir.join("annotated.wasm").display().to_string();
    let output = kwctl(
        &dir,
        &[
            "annotate",
            &fixture("reject-by-label"),
            "-m",
            &metadata,
            "-u",
            &usage,
            "-o",
            &annotated,
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).is_empty());

    let output = kwctl(&dir, &["inspect", &annotated, "-o", "yaml"]);
    let yaml: Value = serde_yaml_ng::from_str(&stdout(&output)).expect("YAML");
    assert_eq!(yaml["protocolVersion"], "v1", "asked from the guest");
    assert_eq!(yaml["backgroundAudit"], false);
    assert_eq!(
        yaml["annotations"]["io.kubewarden.kwctl"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        yaml["annotations"]["io.kubewarden.policy.usage"],
        "Refuses pods with denied labels.\n"
    );

    let text = stdout(&kwctl(&dir, &["inspect", &annotated]));
    for expected in [
        "Details\n",
        "title:",
        "no-forbidden-labels",
        "author:",
        "background audit support: false",
        "execution mode:",
        "protocol version:",
        "Annotations\n",
        "team",
        "Rules\n```yaml\n",
        "Usage\n---\nRefuses pods with denied labels.\n---",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }

    let output = kwctl(
        &dir,
        &[
            "scaffold",
            "manifest",
            "-t",
            "ClusterAdmissionPolicy",
            &annotated,
            "--settings-json",
            r#"{"denied_labels": ["x"]}"#,
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let manifest: Value = serde_yaml_ng::from_str(&stdout(&output)).expect("YAML");
    assert_eq!(manifest["apiVersion"], "policies.kubewarden.io/v1");
    assert_eq!(manifest["kind"], "ClusterAdmissionPolicy");
    assert_eq!(manifest["metadata"]["name"], "no-forbidden-labels");
    assert_eq!(
        manifest["metadata"]["annotations"]["io.kubewarden.policy.severity"],
        "medium"
    );
    assert_eq!(manifest["spec"]["module"], format!("file://{annotated}"));
    assert_eq!(
        manifest["spec"]["settings"],
        json!({"denied_labels": ["x"]})
    );
    assert_eq!(manifest["spec"]["rules"][0]["resources"], json!(["pods"]));
    assert_eq!(manifest["spec"]["mutating"], false);
    assert_eq!(manifest["spec"]["backgroundAudit"], false);
    // The manifest is a ClusterAdmissionPolicy as the controller reads it.
    let policy: api_types::crd::ClusterAdmissionPolicy =
        serde_yaml_ng::from_str(&stdout(&output)).expect("a ClusterAdmissionPolicy");
    assert_eq!(policy.spec.module.module, format!("file://{annotated}"));

    let output = kwctl(
        &dir,
        &[
            "scaffold",
            "manifest",
            "-t",
            "AdmissionPolicy",
            &annotated,
            "--title",
            "Bad Name",
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("Invalid title 'Bad Name'"));

    // Metadata the policy-server would refuse is refused here, naming the field.
    let bad = write(
        &dir,
        "bad.yml",
        "rules:\n- apiGroups: ['']\n  apiVersions: [v1]\n  resources: []\n  operations: [CREATE]\nmutating: false\n",
    );
    let output = kwctl(
        &dir,
        &[
            "annotate",
            &fixture("reject-by-label"),
            "-m",
            &bad,
            "-o",
            &annotated,
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("rules[0]"), "{}", stderr(&output));
}

#[test]
fn store_listing_scaffolds_and_completions() {
    let dir = scratch("store");
    // An upstream-layout store with one module.
    let stored =
        dir.join("cache/kubewarden/store/registry/ghcr.io/kubewarden/policies/reject:v1.0.0");
    std::fs::create_dir_all(stored.parent().expect("parent")).expect("store dirs");
    std::fs::copy(fixture("reject-by-label"), &stored).expect("copy");
    let text = stdout(&kwctl(&dir, &["policies"]));
    assert!(
        text.contains("| registry://ghcr.io/kubewarden/policies/reject:v1.0.0 | no "),
        "{text}"
    );
    assert!(text.contains("| Policy "), "{text}");
    // The stored module runs by its URI.
    let request = write(&dir, "r.json", &pod_review(json!({"x": "1"})).to_string());
    let output = kwctl(
        &dir,
        &[
            "run",
            "registry://ghcr.io/kubewarden/policies/reject:v1.0.0",
            "-r",
            &request,
            "--settings-json",
            r#"{"denied_labels": ["x"]}"#,
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));

    let text = stdout(&kwctl(&dir, &["scaffold", "verification-config"]));
    assert!(text.contains("kind: githubAction"), "{text}");
    assert!(
        text.contains(&format!("{}/config/kubewarden", dir.display())),
        "{text}"
    );

    let output = kwctl(&dir, &["completions", "-s", "bash"]);
    assert!(output.status.success());
    assert!(stdout(&output).contains("kwctl"));
    assert_eq!(
        kwctl(&dir, &["completions", "-s", "tcsh"]).status.code(),
        Some(2)
    );
}

#[test]
fn push_then_pull_through_a_real_registry() {
    let dir = scratch("registry");
    let Some((_registry, host, sources)) = registry_with_sources(&dir) else {
        return;
    };
    let destination = format!("registry://{host}/policies/reject-by-label:v1");
    let output = kwctl(
        &dir,
        &[
            "push",
            &fixture("reject-by-label"),
            &destination,
            "--sources-path",
            &sources,
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.starts_with(&format!(
            "Policy successfully pushed: registry://{host}/policies/reject-by-label@sha256:"
        )),
        "{text}"
    );
    let output = kwctl(
        &dir,
        &[
            "push",
            &fixture("reject-by-label"),
            &destination,
            "--sources-path",
            &sources,
            "-o",
            "json",
        ],
    );
    let answer: Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    assert!(
        answer["immutable_ref"]
            .as_str()
            .is_some_and(|r| r.contains("@sha256:"))
    );

    let output = kwctl(&dir, &["pull", &destination, "--sources-path", &sources]);
    assert!(output.status.success(), "{}", stderr(&output));
    let stored = dir.join(format!(
        "cache/kubewarden/store/registry/{host}/policies/reject-by-label:v1"
    ));
    assert_eq!(
        std::fs::read(&stored).expect("stored"),
        std::fs::read(fixture("reject-by-label")).expect("fixture"),
        "the same bytes came back"
    );
    assert!(stdout(&kwctl(&dir, &["policies"])).contains(&destination));
    let request = write(&dir, "r.json", &pod_review(json!({"x": "1"})).to_string());
    let output = kwctl(
        &dir,
        &[
            "run",
            &destination,
            "-r",
            &request,
            "--settings-json",
            r#"{"denied_labels": ["x"]}"#,
        ],
    );
    let answer: Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    assert_eq!(answer["allowed"], false, "{answer}");

    // Unannotated modules are refused unless forced; an unknown repository cannot be pulled.
    let bare = write(&dir, "bare.wasm", "\0asm\u{1}\0\0\0");
    let output = kwctl(
        &dir,
        &["push", &bare, &destination, "--sources-path", &sources],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("has no Kubewarden metadata"),
        "{}",
        stderr(&output)
    );
    let output = kwctl(
        &dir,
        &[
            "pull",
            &format!("registry://{host}/policies/missing:v1"),
            "--sources-path",
            &sources,
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("could not be downloaded"),
        "{}",
        stderr(&output)
    );

    let output = kwctl(&dir, &["rm", &destination]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stored.exists());
    assert!(stdout(&kwctl(&dir, &["policies"])).is_empty());
}

#[test]
fn bench_save_and_load() {
    let dir = scratch("bench");
    let request = write(&dir, "r.json", &pod_review(json!({"x": "1"})).to_string());
    let output = kwctl(
        &dir,
        &[
            "bench",
            &fixture("reject-by-label"),
            "-r",
            &request,
            "--settings-json",
            r#"{"denied_labels": ["x"]}"#,
            "--warm-up-time",
            "0",
            "--measurement-time",
            "1",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for expected in [
        "validate_settings       time:   [",
        "validate                time:   [",
        "p99:",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }

    // An upstream-layout store saved to a tarball and loaded into another store.
    let stored = dir.join("cache/kubewarden/store/https/example.com/policies/reject.wasm");
    std::fs::create_dir_all(stored.parent().expect("parent")).expect("store dirs");
    std::fs::copy(fixture("reject-by-label"), &stored).expect("copy");
    let tarball = dir.join("policies.tar.gz").display().to_string();
    let output = kwctl(
        &dir,
        &[
            "save",
            "--output",
            &tarball,
            "https://example.com/policies/reject.wasm",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let other = scratch("load");
    let output = kwctl(&other, &["load", "--input", &tarball]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        std::fs::read(other.join("cache/kubewarden/store/https/example.com/policies/reject.wasm"))
            .expect("loaded"),
        std::fs::read(fixture("reject-by-label")).expect("fixture")
    );
    // Only stored policies are saved; a tarball that is not one is refused.
    let output = kwctl(
        &dir,
        &["save", "--output", &tarball, &fixture("accept-all")],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("not in the store"),
        "{}",
        stderr(&output)
    );
    let output = kwctl(&other, &["load", "--input", &request]);
    assert_eq!(output.status.code(), Some(1));
}
