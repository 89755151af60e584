//! The desired child objects of a PolicyServer, from plain values.

use std::collections::BTreeMap;

use api_types::config::PoliciesConfig;
use api_types::crd::PolicyServer;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use super::desired::*;
use super::host_ports;
use crate::certs::IssuedCertificate;
use crate::options::{Options, OwnPorts};

fn policy_server(yaml: &str) -> PolicyServer {
    let mut ps: PolicyServer = serde_yaml_ng::from_str(yaml).expect("fixture parses");
    ps.metadata.uid = Some("0d5c8f3e-0000-4000-8000-000000000001".to_string());
    ps
}

fn default_ps() -> PolicyServer {
    policy_server(
        r#"
apiVersion: policies.kubewarden.io/v1
kind: PolicyServer
metadata: {name: default}
spec:
  image: ghcr.io/kubewarden/policy-server:v1.37.0
  replicas: 1
"#,
    )
}

/// The seed's "PolicyServer with custom ports" example.
fn custom_ports_ps() -> PolicyServer {
    policy_server(
        r#"
apiVersion: policies.kubewarden.io/v1
kind: PolicyServer
metadata: {name: custom-ports}
spec:
  image: ghcr.io/kubewarden/policy-server:latest
  replicas: 2
  webhookPort: 9443
  readinessProbePort: 9081
"#,
    )
}

/// The seed's "Configuring affinity on additional PolicyServers" example.
fn affinity_ps() -> PolicyServer {
    policy_server(
        r#"
apiVersion: policies.kubewarden.io/v1
kind: PolicyServer
metadata: {name: secondary}
spec:
  image: ghcr.io/kubewarden/policy-server:latest
  replicas: 3
  affinity:
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - labelSelector:
          matchExpressions:
          - key: app.kubernetes.io/component
            operator: In
            values: [policy-server, kubewarden-controller]
        topologyKey: kubernetes.io/hostname
"#,
    )
}

fn options(host_network: bool) -> Options {
    Options {
        host_network,
        own_ports: OwnPorts {
            health_probe: Some(8081),
            metrics: Some(8088),
            webhook: None,
        },
        ..Options::new("kubewarden")
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("serialises")
}

fn pod_spec(deployment: &Deployment) -> &PodSpec {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec")
}

fn container(deployment: &Deployment) -> &Container {
    &pod_spec(deployment).containers[0]
}

fn env_of(deployment: &Deployment) -> BTreeMap<String, String> {
    container(deployment)
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

#[test]
fn replicas_left_unset_are_left_to_an_autoscaler() {
    let mut ps = default_ps();
    ps.spec.replicas = None;
    let deployment = desired_deployment(&ps, &options(false), "1234");
    let spec = to_json(&deployment)["spec"].clone();
    assert!(spec.get("replicas").is_none(), "{spec}");
}

#[test]
fn deployment_for_the_default_policy_server() {
    let ps = default_ps();
    let deployment = desired_deployment(&ps, &options(false), "1234");
    let json = to_json(&deployment);

    assert_eq!(json["metadata"]["name"], "policy-server-default");
    assert_eq!(json["metadata"]["namespace"], "kubewarden");
    assert_eq!(
        json["metadata"]["annotations"]["kubewarden/config-version"],
        "1234"
    );
    assert_eq!(
        json["metadata"]["ownerReferences"][0]["kind"],
        "PolicyServer"
    );
    assert_eq!(json["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(
        json["spec"]["selector"],
        json!({"matchLabels": {"app": "kubewarden-policy-server-default"}})
    );
    let template_labels = &json["spec"]["template"]["metadata"]["labels"];
    assert_eq!(template_labels["kubewarden/config-version"], "1234");
    assert_eq!(template_labels["kubewarden/policy-server"], "default");
    assert_eq!(
        template_labels["app.kubernetes.io/component"],
        "policy-server"
    );
    assert_eq!(
        template_labels["app.kubernetes.io/instance"],
        "policy-server-default"
    );

    let pod = &json["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], false);
    assert_eq!(pod["dnsPolicy"], "ClusterFirst");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "ghcr.io/kubewarden/policy-server:v1.37.0");
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readiness", "port": 8081, "scheme": "HTTP"})
    );
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert!(c.get("livenessProbe").is_none());

    let env = env_of(&deployment);
    assert_eq!(env["KUBEWARDEN_PORT"], "8443");
    assert_eq!(env["KUBEWARDEN_READINESS_PROBE_PORT"], "8081");
    assert_eq!(env["KUBEWARDEN_CERT_FILE"], "/pki/tls.crt");
    assert_eq!(env["KUBEWARDEN_POLICIES"], "/config/policies.yml");
    assert!(!env.contains_key("KUBEWARDEN_SOURCES_PATH"));
    assert!(!env.contains_key("KUBEWARDEN_ENABLE_METRICS"));
}

#[test]
fn seed_custom_ports_with_and_without_host_network() {
    let ps = custom_ports_ps();
    for host_network in [false, true] {
        let deployment = desired_deployment(&ps, &options(host_network), "7");
        let pod = pod_spec(&deployment);
        assert_eq!(pod.host_network, Some(host_network));
        let expected_dns = if host_network {
            "ClusterFirstWithHostNet"
        } else {
            "ClusterFirst"
        };
        assert_eq!(pod.dns_policy.as_deref(), Some(expected_dns));
        assert_eq!(deployment.spec.as_ref().and_then(|s| s.replicas), Some(2));
        let ports: Vec<(String, i32)> = container(&deployment)
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            [
                ("webhook".to_string(), 9443),
                ("readiness".to_string(), 9081)
            ]
        );
        // A surge pod would wait for the host ports of the pod it replaces.
        let strategy = to_json(&deployment.spec.as_ref().and_then(|s| s.strategy.clone()));
        if host_network {
            assert_eq!(
                strategy,
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}})
            );
        } else {
            assert_eq!(strategy, json!({"type": "RollingUpdate"}));
        }
        let env = env_of(&deployment);
        assert_eq!(env["KUBEWARDEN_PORT"], "9443");
        assert_eq!(env["KUBEWARDEN_READINESS_PROBE_PORT"], "9081");
        let probe = to_json(&container(&deployment).readiness_probe);
        assert_eq!(probe["httpGet"]["port"], 9081);
    }
    let service = to_json(&desired_service(&ps, &options(true)));
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "policy-server", "port": 443, "targetPort": 9443, "protocol": "TCP"}])
    );
}

#[test]
fn seed_affinity_is_copied_verbatim() {
    let ps = affinity_ps();
    let deployment = desired_deployment(&ps, &options(true), "1");
    assert_eq!(
        to_json(&pod_spec(&deployment).affinity),
        to_json(&ps.spec.affinity)
    );
    assert_eq!(deployment.spec.as_ref().and_then(|s| s.replicas), Some(3));
}

#[test]
fn spec_fields_reach_the_deployment() {
    let ps = policy_server(
        r#"
apiVersion: policies.kubewarden.io/v1
kind: PolicyServer
metadata: {name: full}
spec:
  image: example.com/policy-server:1
  replicas: 1
  annotations: {team: security}
  labels: {team: security, app: user-value}
  env:
  - {name: KUBEWARDEN_LOG_LEVEL, value: debug}
  - {name: KUBEWARDEN_PORT, value: "1"}
  serviceAccountName: policy-server
  priorityClassName: critical
  tolerations: [{key: dedicated, operator: Exists}]
  imagePullSecret: registry-credentials
  insecureSources: [registry.local:5000]
  sourceAuthorities: {"registry.local:5000": ["PEM"]}
  verificationConfig: verification
  sigstoreTrustConfig: trust
  limits: {memory: 1Gi}
  requests: {cpu: 100m}
  securityContexts:
    container: {runAsUser: 1000}
    pod: {runAsGroup: 1000}
"#,
    );
    let mut opts = options(false);
    opts.always_accept_admission_reviews_on_deployments_namespace = true;
    opts.image_pull_secrets = vec!["pull".to_string()];
    opts.enable_metrics = true;
    opts.client_ca_configmap_name = Some("client-ca".to_string());
    let deployment = desired_deployment(&ps, &opts, "9");
    let json = to_json(&deployment);

    assert_eq!(json["metadata"]["annotations"]["team"], "security");
    assert_eq!(json["metadata"]["labels"]["team"], "security");
    let template = &json["spec"]["template"];
    // System labels win over the user's.
    assert_eq!(
        template["metadata"]["labels"]["app"],
        "kubewarden-policy-server-full"
    );
    assert_eq!(template["metadata"]["annotations"]["team"], "security");
    let pod = &template["spec"];
    assert_eq!(pod["serviceAccountName"], "policy-server");
    assert_eq!(pod["priorityClassName"], "critical");
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "pull"}]));
    assert_eq!(pod["securityContext"], json!({"runAsGroup": 1000}));
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"], json!({"runAsUser": 1000}));
    assert_eq!(
        c["resources"],
        json!({"limits": {"memory": "1Gi"}, "requests": {"cpu": "100m"}})
    );

    let env = env_of(&deployment);
    assert_eq!(env["KUBEWARDEN_LOG_LEVEL"], "debug");
    // The user's value replaces the controller's, like the container runtime would.
    assert_eq!(env["KUBEWARDEN_PORT"], "1");
    assert_eq!(
        env["KUBEWARDEN_ALWAYS_ACCEPT_ADMISSION_REVIEWS_ON_NAMESPACE"],
        "kubewarden"
    );
    assert_eq!(
        env["KUBEWARDEN_VERIFICATION_CONFIG_PATH"],
        "/verification/verification.yml"
    );
    assert_eq!(
        env["KUBEWARDEN_SIGSTORE_TRUST_CONFIG_PATH"],
        "/sigstore-trust/sigstore-trust-config.json"
    );
    assert_eq!(
        env["KUBEWARDEN_DOCKER_CONFIG_JSON_PATH"],
        "/home/kubewarden/.docker"
    );
    assert_eq!(env["KUBEWARDEN_SOURCES_PATH"], "/sources/sources.yml");
    assert_eq!(env["KUBEWARDEN_ENABLE_METRICS"], "true");
    assert_eq!(env["KUBEWARDEN_METRICS_PORT"], "8080");
    assert_eq!(
        env["KUBEWARDEN_CLIENT_CA_FILE"],
        "/ca/ca.crt,/client-ca/client-ca.crt"
    );
    let names: Vec<&str> = container(&deployment)
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    let unique: std::collections::BTreeSet<_> = names.iter().collect();
    assert_eq!(
        names.len(),
        unique.len(),
        "no duplicate env names: {names:?}"
    );

    let volumes: BTreeMap<String, Value> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or_default().to_string(),
                v.clone(),
            )
        })
        .collect();
    assert_eq!(
        volumes["docker-config"]["secret"],
        json!({"secretName": "registry-credentials", "items": [{"key": ".dockerconfigjson", "path": "config.json"}]})
    );
    assert_eq!(
        volumes["verification"]["configMap"]["items"],
        json!([{"key": "verification-config", "path": "verification.yml"}])
    );
    assert_eq!(volumes["ca"]["secret"]["secretName"], "kubewarden-ca");
    assert_eq!(volumes["client-ca"]["configMap"]["name"], "client-ca");
    let mounts: BTreeMap<String, String> = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default().to_string(),
                m["mountPath"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(mounts["tmp"], "/tmp");
    assert_eq!(mounts["certs"], "/pki");
    assert_eq!(mounts["policies"], "/config");
    assert_eq!(mounts["docker-config"], "/home/kubewarden/.docker");

    let ports: Vec<i32> = container(&deployment)
        .ports
        .iter()
        .flatten()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(ports, [8443, 8081, 8080]);
    let service = to_json(&desired_service(&ps, &opts));
    assert_eq!(
        service["spec"]["ports"][1],
        json!({"name": "metrics", "port": 8080, "targetPort": 8080, "protocol": "TCP"})
    );
}

#[test]
fn service_metrics_port_follows_the_spec_but_targets_the_controller_default() {
    let mut ps = default_ps();
    ps.spec.metrics_port = Some(9090);
    let mut opts = options(false);
    opts.enable_metrics = true;
    opts.policy_server_metrics_port = 8085;
    let service = to_json(&desired_service(&ps, &opts));
    assert_eq!(service["spec"]["ports"][1]["port"], 9090);
    assert_eq!(service["spec"]["ports"][1]["targetPort"], 8085);
    assert_eq!(
        service["spec"]["selector"],
        json!({"app.kubernetes.io/instance": "policy-server-default", "app.kubernetes.io/part-of": "kubewarden"})
    );
}

#[test]
fn pdb_only_when_asked_for() {
    let mut ps = default_ps();
    assert!(desired_pdb(&ps, &options(false)).is_none());
    ps.spec.min_available = Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1));
    let pdb = to_json(&desired_pdb(&ps, &options(false)).expect("pdb"));
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"]["kubewarden/policy-server"],
        "default"
    );
}

#[test]
fn in_place_reloading_rolls_the_pods_only_for_new_sources() {
    let mut ps = default_ps();
    let policies: PoliciesConfig =
        PoliciesConfig::parse(r#"{"p": {"module": "file:///p.wasm"}}"#).expect("policies");
    let mut cm = desired_config_map(&ps, &options(false), &policies);
    cm.metadata.resource_version = Some("41".to_string());
    assert_eq!(
        config_version(&ps, &cm),
        "41",
        "rollout: every change rolls"
    );
    let deployment = desired_deployment(&ps, &options(false), "41");
    assert!(!env_of(&deployment).contains_key("KUBEWARDEN_RELOAD_POLICIES"));

    ps.spec.policy_reload_mode = Some(api_types::crd::PolicyReloadMode::InPlace);
    let in_place = config_version(&ps, &cm);
    assert!(in_place.starts_with("in-place-"), "{in_place}");
    let mut changed_policies = desired_config_map(&ps, &options(false), &PoliciesConfig::default());
    changed_policies.metadata.resource_version = Some("42".to_string());
    assert_eq!(
        config_version(&ps, &changed_policies),
        in_place,
        "a policy change does not roll"
    );
    ps.spec.insecure_sources = Some(vec!["registry.local:5000".to_string()]);
    let new_sources = desired_config_map(&ps, &options(false), &policies);
    assert_ne!(
        config_version(&ps, &new_sources),
        in_place,
        "new sources roll"
    );
    let deployment = desired_deployment(&ps, &options(false), &in_place);
    assert_eq!(env_of(&deployment)["KUBEWARDEN_RELOAD_POLICIES"], "true");
}

#[test]
fn config_map_and_secret() {
    let mut ps = default_ps();
    ps.spec.insecure_sources = Some(vec!["registry.local:5000".to_string()]);
    let policies = PoliciesConfig::default();
    let cm = desired_config_map(&ps, &options(false), &policies);
    let data = cm.data.expect("data");
    assert_eq!(data["policies.yml"], "{}");
    assert_eq!(
        serde_json::from_str::<Value>(&data["sources.yml"]).expect("json"),
        json!({"insecure_sources": ["registry.local:5000"], "source_authorities": {}})
    );
    assert_eq!(
        cm.metadata.labels.expect("labels")["kubewarden/policy-server"],
        "default"
    );

    let cert = IssuedCertificate {
        cert_pem: "CERT".into(),
        key_pem: "KEY".into(),
    };
    let secret = to_json(&desired_secret(&ps, &options(false), &cert));
    assert_eq!(
        secret["metadata"]["annotations"]["kubewarden.io/cert-format-version"],
        "1"
    );
    assert_eq!(secret["data"]["tls.crt"], "Q0VSVA==");
    assert_eq!(
        service_dns_name(&ps, &options(false)),
        "policy-server-default.kubewarden.svc"
    );
}

#[test]
fn controller_port_clash_is_explained_only_in_host_network_mode() {
    let ps = default_ps();
    assert_eq!(
        host_ports::controller_port_clash(&ps, &options(false)),
        None
    );
    let message = host_ports::controller_port_clash(&ps, &options(true)).expect("clash");
    assert!(
        message.contains("spec.readinessProbePort 8081 is also the controller's health probe port"),
        "{message}"
    );
    assert_eq!(
        host_ports::controller_port_clash(&custom_ports_ps(), &options(true)),
        None
    );
}

fn pod(value: Value) -> Pod {
    serde_json::from_value(value).expect("pod")
}

#[test]
fn pending_pod_names_the_clashing_port_and_its_holder() {
    let ps = custom_ports_ps();
    let running = pod(json!({
        "metadata": {"name": "policy-server-custom-ports-a", "labels": {"kubewarden/policy-server": "custom-ports"}},
        "spec": {"nodeName": "node-0", "hostNetwork": true, "containers": [{"name": "c", "ports": [
            {"containerPort": 9443, "hostPort": 9443}, {"containerPort": 9081, "hostPort": 9081}]}]},
        "status": {"phase": "Running"}
    }));
    let pending = pod(json!({
        "metadata": {"name": "policy-server-custom-ports-b"},
        "spec": {"hostNetwork": true, "containers": [{"name": "c"}]},
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports."}]}
    }));
    let pods = [running, pending];
    assert_eq!(
        host_ports::pending_pod_conflicts(&ps, &options(false), &pods, &[]),
        None
    );
    let message =
        host_ports::pending_pod_conflicts(&ps, &options(true), &pods, &[]).expect("conflict");
    assert!(
        message.starts_with("1 policy-server pod(s) cannot be scheduled"),
        "{message}"
    );
    assert!(
        message.contains(
            "spec.webhookPort 9443 is already bound by policy-server-custom-ports-a on node-0"
        ),
        "{message}"
    );
    assert!(message.contains("anti-affinity"), "{message}");
    assert_eq!(
        host_ports::pending_pod_conflicts(&ps, &options(true), &pods[..1], &[]),
        None
    );
}

#[test]
fn pods_refused_by_the_apiserver_are_reported_with_its_message() {
    use super::reconcile::{condition, pods_created_condition};
    let refused: Deployment = serde_json::from_value(json!({
        "status": {"conditions": [
            {"type": "Available", "status": "False"},
            {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
             "message": "pods \"policy-server-x-1\" is forbidden: violates PodSecurity \"restricted:latest\": host namespaces (hostNetwork=true)"}
        ]}
    }))
    .expect("deployment");
    let reported = pods_created_condition(&refused);
    assert_eq!(reported.type_, condition::PODS_CREATED);
    assert!(!reported.is_true());
    assert!(reported.message.contains("violates PodSecurity"));

    let healthy: Deployment = serde_json::from_value(json!({
        "status": {"conditions": [{"type": "ReplicaFailure", "status": "False"}]}
    }))
    .expect("deployment");
    assert!(pods_created_condition(&healthy).is_true());
    assert!(pods_created_condition(&Deployment::default()).is_true());
}

/// The environment of the policy-server container, as name → value.
fn container_env_of(deployment: &Deployment) -> BTreeMap<String, String> {
    let json = to_json(deployment);
    json["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|var| {
            (
                var["name"].as_str().unwrap_or_default().to_string(),
                var["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn telemetry_custom_mode_passes_the_collector_settings_and_certificates_on() {
    let mut ps = default_ps();
    ps.spec.env = Some(vec![
        serde_json::from_value(json!({"name": "OTEL_EXPORTER_OTLP_INSECURE", "value": "false"}))
            .expect("env var"),
    ]);
    let mut opts = options(false);
    opts.enable_metrics = true;
    opts.telemetry = crate::options::TelemetryOptions {
        tracing: true,
        sidecar: false,
        otlp_env: vec![
            (
                "OTEL_EXPORTER_OTLP_CERTIFICATE".into(),
                "/otel-certificate/ca.crt".into(),
            ),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                "https://collector.observability:4317".into(),
            ),
            ("OTEL_EXPORTER_OTLP_INSECURE".into(), "true".into()),
        ],
        certificate_secret: Some("otel-ca".into()),
        client_certificate_secret: Some("otel-client".into()),
    };
    let deployment = desired_deployment(&ps, &opts, "1");
    let env = container_env_of(&deployment);
    assert_eq!(
        env["OTEL_EXPORTER_OTLP_ENDPOINT"],
        "https://collector.observability:4317"
    );
    assert_eq!(
        env["OTEL_EXPORTER_OTLP_CERTIFICATE"],
        "/otel-certificate/ca.crt"
    );
    assert_eq!(
        env["OTEL_EXPORTER_OTLP_INSECURE"], "false",
        "the PolicyServer's own env wins"
    );
    assert_eq!(env["KUBEWARDEN_LOG_FMT"], "otlp");
    assert_eq!(env["KUBEWARDEN_ENABLE_METRICS"], "true");
    let json = to_json(&deployment);
    let pod = &json["spec"]["template"]["spec"];
    let mounts = &pod["containers"][0]["volumeMounts"];
    for (volume, secret, path) in [
        ("otel-certificate", "otel-ca", "/otel-certificate"),
        (
            "otel-client-certificate",
            "otel-client",
            "/otel-client-certificate",
        ),
    ] {
        assert!(
            pod["volumes"]
                .as_array()
                .expect("volumes")
                .contains(&json!({"name": volume, "secret": {"secretName": secret}})),
            "{pod}"
        );
        assert!(
            mounts
                .as_array()
                .expect("mounts")
                .iter()
                .any(|m| m["name"] == volume && m["mountPath"] == path && m["readOnly"] == true),
            "{mounts}"
        );
    }
    assert!(json["spec"]["template"]["metadata"]["annotations"].is_null());
}

#[test]
fn telemetry_sidecar_mode_injects_the_collector_and_exports_to_it() {
    let mut opts = options(false);
    opts.telemetry.tracing = true;
    opts.telemetry.sidecar = true;
    let deployment = desired_deployment(&default_ps(), &opts, "1");
    let env = container_env_of(&deployment);
    assert_eq!(env["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://localhost:4317");
    assert_eq!(
        env["KUBEWARDEN_PROMETHEUS_METRICS"], "false",
        "the sidecar serves that port"
    );
    assert_eq!(env["KUBEWARDEN_LOG_FMT"], "otlp");
    assert!(!env.contains_key("KUBEWARDEN_ENABLE_METRICS"));
    let json = to_json(&deployment);
    assert_eq!(
        json["spec"]["template"]["metadata"]["annotations"][OTEL_SIDECAR_ANNOTATION],
        "true"
    );

    // Telemetry off: none of it.
    let deployment = desired_deployment(&default_ps(), &options(false), "1");
    let env = container_env_of(&deployment);
    assert!(env.keys().all(|name| !name.starts_with("OTEL_")), "{env:?}");
    assert!(!env.contains_key("KUBEWARDEN_LOG_FMT"));
}
