//! Sigstore signature verification by the real policy-server binary against a real OCI
//! registry (Debian's `docker-registry`): modules checked against `--verification-path` before
//! they run, keyless signatures against a local trust root (`--sigstore-trust-config`), and the
//! `oci/v2/verify` capability. Signatures are stored in cosign's layout (`test_cluster::cosign`).
//!
//! Without `/usr/bin/docker-registry` these tests print why and return, unless
//! `KUBEWARDEN_REQUIRE_TEST_SERVERS` is set (as `cargo xtask test` and CI do).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::registry::push;
use common::*;
use serde_json::json;
use test_cluster::cosign::{
    Signature, SigningKeyPair, SigstoreInstance, attach, manifest_digest, payload,
};
use test_cluster::registry::{Registry, start_registry};

const WORKFLOW: &str =
    "https://github.com/kubewarden/policy/.github/workflows/release.yml@refs/tags/v1.0.0";
const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Pushes `fixture` to `repository` and returns its reference and its signing payload.
fn pushed(
    registry: &Registry,
    repository: &str,
    fixture: &str,
    signed_annotations: &[(&str, &str)],
) -> (String, Vec<u8>) {
    let reference = push(registry, repository, fixture, None);
    let digest = manifest_digest(&reference);
    let payload = payload(&reference, &digest, &annotations(signed_annotations));
    (reference, payload)
}

fn message(answer: &serde_json::Value) -> String {
    answer["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn insecure_sources(dir: &Path, registry: &Registry) -> String {
    write(
        dir,
        "sources.yml",
        &format!("insecure_sources: [\"localhost:{}\"]\n", registry.port),
    )
    .display()
    .to_string()
}

#[test]
fn modules_run_only_with_the_configured_key_signatures() {
    let (dir, _pki) = setup("signatures-key");
    let Some(registry) = start_registry(&dir, None) else {
        return;
    };
    let trusted = SigningKeyPair::generate();
    let stranger = SigningKeyPair::generate();

    let (signed, signed_payload) =
        pushed(&registry, "p/signed", "reject-by-label", &[("env", "prod")]);
    attach(
        &signed,
        vec![Signature::with_key(&trusted, signed_payload.clone())],
    );
    let (unsigned, _) = pushed(&registry, "p/unsigned", "accept-all", &[]);
    let (by_stranger, stranger_payload) =
        pushed(&registry, "p/stranger", "accept-all", &[("env", "prod")]);
    attach(
        &by_stranger,
        vec![Signature::with_key(&stranger, stranger_payload)],
    );
    let (no_annotation, bare_payload) = pushed(&registry, "p/bare", "accept-all", &[]);
    attach(
        &no_annotation,
        vec![Signature::with_key(&trusted, bare_payload)],
    );
    // A valid signature of another artifact, copied next to this one.
    let (copied, _) = pushed(&registry, "p/copied", "accept-all", &[("env", "prod")]);
    attach(&copied, vec![Signature::with_key(&trusted, signed_payload)]);

    let key = trusted
        .public_pem()
        .lines()
        .map(|l| format!("      {l}\n"))
        .collect::<String>();
    let verification = write(
        &dir,
        "verification.yml",
        &format!(
            "apiVersion: v1\nallOf:\n  - kind: pubKey\n    owner: release-team\n    key: |\n{key}    annotations:\n      env: prod\n"
        ),
    );
    let module = |reference: &str| format!("  module: registry://{reference}\n");
    let policies = write(
        &dir,
        "policies.yml",
        &format!(
            "signed:\n{}  settings: {{denied_labels: [forbidden]}}\nunsigned:\n{}stranger:\n{}bare:\n{}copied:\n{}local-file:\n  module: file://{}/accept-all.wasm\n",
            module(&signed),
            module(&unsigned),
            module(&by_stranger),
            module(&no_annotation),
            module(&copied),
            fixtures().display()
        ),
    );
    let sources = insecure_sources(&dir, &registry);
    let verification_arg = verification.display().to_string();
    let server = start_with(
        &dir,
        &policies,
        None,
        &[
            "--sources-path",
            &sources,
            "--verification-path",
            &verification_arg,
        ],
    );
    let ca = dir.join("ca.crt");

    // The signed module runs, and decides as itself.
    assert_eq!(
        verdict(&server, &ca, "signed", json!({"forbidden": "x"}))["allowed"],
        false
    );
    assert_eq!(verdict(&server, &ca, "signed", json!({}))["allowed"], true);

    for (policy, expected) in [
        ("unsigned", "no trusted signatures found"),
        (
            "stranger",
            "The following constraints were not satisfied:\nkind: pubKey\nowner: release-team",
        ),
        ("bare", "missing signatures"),
        ("copied", "no trusted signatures found"),
        ("local-file", "only registry:// modules carry signatures"),
    ] {
        let answer = verdict(&server, &ca, policy, json!({}));
        assert_eq!(answer["allowed"], false, "{policy}: {answer}");
        assert_eq!(answer["status"]["code"], 500, "{policy}: {answer}");
        assert!(message(&answer).contains(expected), "{policy}: {answer}");
    }
}

#[test]
fn keyless_signatures_are_checked_against_the_trust_config() {
    let (dir, _pki) = setup("signatures-keyless");
    let Some(registry) = start_registry(&dir, None) else {
        return;
    };
    let sigstore = SigstoreInstance::new("fulcio");
    let impostor = SigstoreInstance::new("another fulcio");
    sigstore.write_trust_config(&dir.join("trust.json"));

    let (by_workflow, workflow_payload) = pushed(&registry, "p/workflow", "accept-all", &[]);
    attach(
        &by_workflow,
        vec![sigstore.sign_keyless(workflow_payload, GITHUB_ISSUER, WORKFLOW)],
    );
    let (by_alice, alice_payload) = pushed(&registry, "p/alice", "accept-all", &[]);
    attach(
        &by_alice,
        vec![sigstore.sign_keyless(
            alice_payload,
            "https://github.com/login/oauth",
            "alice@example.com",
        )],
    );
    let (untrusted_ca, untrusted_payload) = pushed(&registry, "p/untrusted", "accept-all", &[]);
    attach(
        &untrusted_ca,
        vec![impostor.sign_keyless(untrusted_payload, GITHUB_ISSUER, WORKFLOW)],
    );
    let (untrusted_fulcio, fulcio_payload) =
        pushed(&registry, "p/untrusted-fulcio", "accept-all", &[]);
    attach(
        &untrusted_fulcio,
        vec![sigstore.sign_keyless_certified_by(
            &impostor,
            fulcio_payload,
            GITHUB_ISSUER,
            WORKFLOW,
        )],
    );
    let (other_org, other_payload) = pushed(&registry, "p/other-org", "accept-all", &[]);
    attach(
        &other_org,
        vec![sigstore.sign_keyless(
            other_payload,
            GITHUB_ISSUER,
            "https://github.com/kubewarden-evil/policy/.github/workflows/release.yml@refs/tags/v1",
        )],
    );

    let verification = write(
        &dir,
        "verification.yml",
        "apiVersion: v1\nanyOf:\n  minimumMatches: 1\n  signatures:\n    - kind: githubAction\n      owner: kubewarden\n      repo: policy\n    - kind: genericIssuer\n      issuer: https://github.com/login/oauth\n      subject:\n        equal: alice@example.com\n    - kind: genericIssuer\n      issuer: https://token.actions.githubusercontent.com\n      subject:\n        urlPrefix: https://github.com/kubewarden\n",
    );
    let module = |reference: &str| format!("  module: registry://{reference}\n");
    let policies = write(
        &dir,
        "policies.yml",
        &format!(
            "workflow:\n{}alice:\n{}untrusted:\n{}untrusted-fulcio:\n{}other-org:\n{}",
            module(&by_workflow),
            module(&by_alice),
            module(&untrusted_ca),
            module(&untrusted_fulcio),
            module(&other_org)
        ),
    );
    let sources = insecure_sources(&dir, &registry);
    let (verification_arg, trust_arg) = (
        verification.display().to_string(),
        dir.join("trust.json").display().to_string(),
    );
    let server = start_with(
        &dir,
        &policies,
        None,
        &[
            "--sources-path",
            &sources,
            "--verification-path",
            &verification_arg,
            "--sigstore-trust-config",
            &trust_arg,
        ],
    );
    let ca = dir.join("ca.crt");
    assert_eq!(
        verdict(&server, &ca, "workflow", json!({}))["allowed"],
        true
    );
    assert_eq!(verdict(&server, &ca, "alice", json!({}))["allowed"], true);
    for (policy, expected) in [
        // Its Rekor bundle is signed by a log the trust config does not know.
        ("untrusted", "no trusted signatures found"),
        // Logged, but its certificate does not chain to the trusted Fulcio.
        (
            "untrusted-fulcio",
            "minimum number of signatures not reached: needed 1, got 0",
        ),
        (
            "other-org",
            "minimum number of signatures not reached: needed 1, got 0",
        ),
    ] {
        let answer = verdict(&server, &ca, policy, json!({}));
        assert_eq!(answer["status"]["code"], 500, "{policy}: {answer}");
        assert!(message(&answer).contains(expected), "{policy}: {answer}");
    }
}

#[test]
fn policies_verify_images_through_the_host_capability() {
    let (dir, _pki) = setup("signatures-capability");
    let Some(registry) = start_registry(&dir, None) else {
        return;
    };
    let trusted = SigningKeyPair::generate();
    let sigstore = SigstoreInstance::new("fulcio");
    sigstore.write_trust_config(&dir.join("trust.json"));
    let (image, image_payload) = pushed(&registry, "apps/web", "accept-all", &[]);
    attach(
        &image,
        vec![
            Signature::with_key(&trusted, image_payload.clone()),
            sigstore.sign_keyless(image_payload, GITHUB_ISSUER, WORKFLOW),
        ],
    );
    let digest = manifest_digest(&image);

    let host_call = |name: &str, payload: serde_json::Value| {
        format!(
            "{name}:\n  module: file://{}/host-call.wasm\n  hostCapabilities: [\"oci/*\"]\n  settings: {}\n",
            fixtures().display(),
            json!({"namespace": "oci", "operation": "v2/verify", "payload": payload})
        )
    };
    let policies = write(
        &dir,
        "policies.yml",
        &[
            host_call(
                "by-key",
                json!({"type": "SigstorePubKeyVerify", "image": image, "pub_keys": [trusted.public_pem()], "annotations": null}),
            ),
            host_call(
                "by-other-key",
                json!({"type": "SigstorePubKeyVerify", "image": image, "pub_keys": [SigningKeyPair::generate().public_pem()]}),
            ),
            host_call(
                "by-workflow",
                json!({"type": "SigstoreGithubActionsVerify", "image": image, "owner": "kubewarden", "repo": "policy"}),
            ),
            host_call(
                "by-prefix",
                json!({"type": "SigstoreKeylessPrefixVerify", "image": image, "keyless_prefix": [{"issuer": GITHUB_ISSUER, "url_prefix": "https://github.com/kubewarden"}]}),
            ),
            host_call(
                "with-annotation",
                json!({"type": "SigstoreKeylessVerify", "image": image, "keyless": [{"issuer": GITHUB_ISSUER, "subject": WORKFLOW}], "annotations": {"env": "prod"}}),
            ),
        ]
        .concat(),
    );
    let sources = insecure_sources(&dir, &registry);
    let trust_arg = dir.join("trust.json").display().to_string();
    let server = start_with(
        &dir,
        &policies,
        None,
        &[
            "--sources-path",
            &sources,
            "--sigstore-trust-config",
            &trust_arg,
        ],
    );
    let ca = dir.join("ca.crt");
    let expected = json!({"is_trusted": true, "digest": digest}).to_string();
    for policy in ["by-key", "by-workflow", "by-prefix"] {
        let answer = verdict(&server, &ca, policy, json!({}));
        assert_eq!(answer["allowed"], true, "{policy}: {answer}");
        assert_eq!(answer["warnings"][0], expected, "{policy}: {answer}");
    }
    for (policy, expected) in [
        ("by-other-key", "kind: pubKey"),
        ("with-annotation", "missing signatures"),
    ] {
        let answer = verdict(&server, &ca, policy, json!({}));
        assert_eq!(answer["allowed"], false, "{policy}: {answer}");
        assert!(message(&answer).contains(expected), "{policy}: {answer}");
    }
}
