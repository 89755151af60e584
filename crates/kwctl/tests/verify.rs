//! `kwctl verify`, and `pull` and `run` with upstream's verification flags, against cosign
//! signatures stored in a real registry (Debian's `docker-registry`): key signatures with
//! annotations, and keyless ones checked against a local Fulcio and Rekor
//! (`test_cluster::cosign`), given as a trust config or as certificate and key files.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::{Value, json};
use test_cluster::cosign::{
    Signature, SigningKeyPair, SigstoreInstance, attach, manifest_digest, payload,
};

const ISSUER: &str = "https://accounts.example.com";
const SIGNER: &str = "release@example.com";

/// Runs kwctl and says whether it succeeded, with its standard error.
fn verdict(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let output = kwctl(dir, args);
    (output.status.success(), stderr(&output))
}

#[test]
fn signatures_are_verified_before_policies_are_pulled_or_run() {
    let dir = scratch("verify");
    let Some((_registry, host, sources)) = registry_with_sources(&dir) else {
        return;
    };
    let reference = format!("{host}/policies/reject-by-label:v1");
    let uri = format!("registry://{reference}");
    push_fixture(&dir, "reject-by-label", &uri, &sources);

    let trusted = SigningKeyPair::generate();
    let sigstore = SigstoreInstance::new("kwctl tests");
    let digest = manifest_digest(&reference);
    let signed_annotations: BTreeMap<String, String> =
        [("env".to_string(), "prod".to_string())].into();
    let signed = payload(&reference, &digest, &signed_annotations);
    attach(
        &reference,
        vec![
            Signature::with_key(&trusted, signed.clone()),
            sigstore.sign_keyless(signed, ISSUER, SIGNER),
        ],
    );
    let key = write(&dir, "trusted.pub", &trusted.public_pem());
    let stranger = write(
        &dir,
        "stranger.pub",
        &SigningKeyPair::generate().public_pem(),
    );
    let trust_config = dir.join("trust.json");
    sigstore.write_trust_config(&trust_config);
    let trust_config = trust_config.display().to_string();
    let fulcio = write(&dir, "fulcio.pem", &sigstore.fulcio_pem());
    let rekor = write(&dir, "rekor.pub", &sigstore.rekor_public_pem());

    let verify = |flags: &[&str]| {
        let mut args = vec!["verify", uri.as_str(), "--sources-path", sources.as_str()];
        args.extend_from_slice(flags);
        verdict(&dir, &args)
    };

    // Accepted: the key, with and without the signed annotation; keyless with a trust config
    // or with the Fulcio certificate and Rekor key; everything at once.
    for flags in [
        vec!["-k", key.as_str()],
        vec!["-k", key.as_str(), "-a", "env=prod"],
        vec![
            "--cert-email",
            SIGNER,
            "--cert-oidc-issuer",
            ISSUER,
            "--sigstore-trust-config",
            &trust_config,
        ],
        vec![
            "--cert-email",
            SIGNER,
            "--cert-oidc-issuer",
            ISSUER,
            "--fulcio-cert-path",
            &fulcio,
            "--rekor-public-key-path",
            &rekor,
            "-k",
            &key,
            "-a",
            "env=prod",
        ],
    ] {
        let (ok, log) = verify(&flags);
        assert!(ok, "{flags:?}: {log}");
        assert!(log.contains("Policy successfully verified"), "{log}");
    }

    // Refused, with what was not satisfied.
    for (flags, expected) in [
        (vec!["-k", stranger.as_str()], "missing signatures"),
        (vec!["-k", key.as_str(), "-a", "env=dev"], "env: dev"),
        (
            vec![
                "--cert-email",
                "mallory@example.com",
                "--cert-oidc-issuer",
                ISSUER,
                "--sigstore-trust-config",
                &trust_config,
            ],
            "mallory@example.com",
        ),
        (
            vec![
                "--cert-email",
                SIGNER,
                "--cert-oidc-issuer",
                ISSUER,
                "--fulcio-cert-path",
                &fulcio,
            ],
            "both a fulcio certificate and a rekor public key are required",
        ),
        (
            vec!["-a", "env=prod"],
            "no verification keys, OIDC issuer or GitHub owner",
        ),
        (
            vec!["--github-repo", "policies"],
            "the repository owner is missing",
        ),
        (
            vec![],
            "no verification keys, OIDC issuer or file path was passed",
        ),
    ] {
        let (ok, log) = verify(&flags);
        assert!(!ok, "{flags:?} was accepted");
        assert!(log.contains(expected), "{flags:?}: {log}");
        assert_eq!(
            log.trim_end()
                .lines()
                .filter(|l| l.starts_with("Error:"))
                .count(),
            1,
            "{log}"
        );
    }

    // A verification config file, as a PolicyServer's `verificationConfig`.
    let config = write(
        &dir,
        "verification.yml",
        &format!(
            "apiVersion: v1\nallOf:\n  - kind: genericIssuer\n    issuer: {ISSUER}\n    subject:\n      equal: {SIGNER}\n"
        ),
    );
    let (ok, log) = verify(&[
        "--verification-config-path",
        &config,
        "--sigstore-trust-config",
        &trust_config,
    ]);
    assert!(ok, "{log}");
    let (ok, log) = verify(&["--verification-config-path", &config, "-k", &key]);
    assert!(
        !ok && log.contains("cannot be used in conjunction"),
        "{log}"
    );

    // `pull` and `run` verify first, and take the verified digest.
    let (ok, log) = verdict(
        &dir,
        &["pull", &uri, "--sources-path", &sources, "-k", &stranger],
    );
    assert!(!ok && log.contains("cannot be validated"), "{log}");
    assert!(
        stdout(&kwctl(&dir, &["policies"])).is_empty(),
        "nothing was stored"
    );
    let request = write(
        &dir,
        "r.json",
        &pod_review(json!({"forbidden": "1"})).to_string(),
    );
    let run = |key: &str| {
        kwctl(
            &dir,
            &[
                "run",
                &uri,
                "-r",
                &request,
                "--settings-json",
                r#"{"denied_labels": ["forbidden"]}"#,
                "--sources-path",
                &sources,
                "-k",
                key,
            ],
        )
    };
    let refused = run(&stranger);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stdout(&refused).is_empty(), "the policy did not run");
    let accepted = run(&key);
    assert!(accepted.status.success(), "{}", stderr(&accepted));
    let answer: Value = serde_json::from_str(&stdout(&accepted)).expect("JSON");
    assert_eq!(answer["allowed"], false, "{answer}");
    let (ok, log) = verdict(
        &dir,
        &["pull", &uri, "--sources-path", &sources, "-k", &key],
    );
    assert!(ok, "{log}");
    assert!(stdout(&kwctl(&dir, &["policies"])).contains(&uri));

    // `inspect --show-signatures` lists the signature layers, or says there are none.
    let output = kwctl(
        &dir,
        &[
            "inspect",
            &uri,
            "--show-signatures",
            "--sources-path",
            &sources,
        ],
    );
    let text = stdout(&output);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(text.contains("\nSigstore signatures\n"), "{text}");
    assert_eq!(
        text.matches("application/vnd.dev.cosign.simplesigning.v1+json")
            .count(),
        2,
        "{text}"
    );
    assert!(text.contains("dev.sigstore.cosign/certificate"), "{text}");
    let unsigned = format!("registry://{host}/policies/unsigned:v1");
    push_fixture(&dir, "accept-all", &unsigned, &sources);
    let output = kwctl(&dir, &["pull", &unsigned, "--sources-path", &sources]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&kwctl(
        &dir,
        &[
            "inspect",
            &unsigned,
            "--show-signatures",
            "--sources-path",
            &sources,
        ],
    ));
    assert!(text.ends_with("\nNo sigstore signatures found\n"), "{text}");
}
