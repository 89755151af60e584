//! policies.yml and sources.yml read and write the upstream format unchanged.

mod support;

use api_types::config::{PoliciesConfig, PolicyOrGroup, SourceAuthority, SourcesConfig};
use api_types::crd::PolicyMode;
use serde_json::Value;
use support::fixture;

#[test]
fn controller_written_policies_yml_round_trips() {
    let text = fixture("policies.yml");
    let config = PoliciesConfig::parse(&text).expect("parses");
    let original: Value = serde_json::from_str(&text).expect("fixture is JSON");
    let written: Value = serde_json::from_str(&config.to_json()).expect("output is JSON");
    pretty_assertions::assert_eq!(written, original);

    let PolicyOrGroup::Group(group) = &config.0["clusterwide-group-demo"] else {
        panic!("clusterwide-group-demo is a group");
    };
    assert_eq!(group.policies.len(), 3);
    assert_eq!(group.policies["signed_by_bob"].settings, Some(Value::Null));
    let PolicyOrGroup::Policy(policy) = &config.0["namespaced-team-a-privileged-pods"] else {
        panic!("a plain policy");
    };
    assert_eq!(policy.policy_mode, PolicyMode::Monitor);
    assert_eq!(policy.timeout_eval_seconds, Some(5));
}

#[test]
fn hand_written_policies_yml_gets_defaults_and_ignores_unknown_keys() {
    let config = PoliciesConfig::parse(&fixture("policies-handwritten.yml")).expect("parses");
    let PolicyOrGroup::Policy(privileged) = &config.0["pod-privileged"] else {
        panic!("a policy");
    };
    assert_eq!(privileged.policy_mode, PolicyMode::Protect);
    assert!(!privileged.allowed_to_mutate);
    assert_eq!(privileged.host_capabilities, None);
    let PolicyOrGroup::Policy(caps) = &config.0["psp-capabilities"] else {
        panic!("a policy");
    };
    assert_eq!(caps.policy_mode, PolicyMode::Monitor);
    assert!(!config.to_json().contains("someFutureKey"));
}

#[test]
fn policies_yml_errors_name_the_problem() {
    let err = PoliciesConfig::parse("a/b:\n  module: file:///x.wasm\n").expect_err("slash in id");
    assert!(err.to_string().contains("contains '/'"), "{err}");
    let err = PoliciesConfig::parse("p:\n  settings: {}\n").expect_err("no module");
    assert!(
        err.to_string().starts_with("cannot parse policies.yml"),
        "{err}"
    );
    let err = PoliciesConfig::parse("p: [").expect_err("broken YAML");
    assert!(
        err.to_string().starts_with("cannot parse policies.yml"),
        "{err}"
    );
}

#[test]
fn sources_yml_round_trips() {
    let text = fixture("sources.yml");
    let config = SourcesConfig::parse(&text).expect("parses");
    assert_eq!(
        config.insecure_sources,
        ["localhost:5000", "registry.local"]
    );
    assert!(matches!(
        config.source_authorities["other.example.com"][0],
        SourceAuthority::Path { ref path } if path == "/etc/ssl/other.pem"
    ));
    let original: Value = serde_yaml_ng::from_str(&text).expect("YAML");
    let written: Value = serde_json::from_str(&config.to_json()).expect("JSON");
    assert_eq!(written, original);
}

#[test]
fn sources_from_policy_server_fields() {
    let authorities = [("registry.local:5443".to_string(), vec!["PEM".to_string()])].into();
    let config = SourcesConfig::from_policy_server(&["insecure.local".to_string()], &authorities);
    let json: Value = serde_json::from_str(&config.to_json()).expect("JSON");
    assert_eq!(
        json,
        serde_json::json!({
            "insecure_sources": ["insecure.local"],
            "source_authorities": {"registry.local:5443": [{"type": "Data", "data": "PEM"}]}
        })
    );
    assert!(SourcesConfig::default().is_empty());
}
