//! The objects a PolicyServer is made of, built from its spec and the controller's options.
//! Pure functions: the reconciler applies what they return.

use std::collections::BTreeMap;

use api_types::config::{PoliciesConfig, SourcesConfig, short_digest};
use api_types::crd::{PolicyReloadMode, PolicyServer};
use api_types::defaults;
use api_types::naming::{self, annotations, labels};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, HTTPGetAction, KeyToPath, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::certs::IssuedCertificate;
use crate::options::Options;

/// Where the policy-server container finds what the controller mounts.
pub mod paths {
    pub const TMP: &str = "/tmp";
    pub const CERTS: &str = "/pki";
    pub const CERT_FILE: &str = "/pki/tls.crt";
    pub const KEY_FILE: &str = "/pki/tls.key";
    pub const CONFIG: &str = "/config";
    pub const POLICIES_FILE: &str = "/config/policies.yml";
    pub const SOURCES: &str = "/sources";
    pub const SOURCES_FILE: &str = "/sources/sources.yml";
    pub const SIGSTORE_CACHE: &str = "/tmp/sigstore-data";
    pub const VERIFICATION: &str = "/verification";
    pub const VERIFICATION_FILE_NAME: &str = "verification.yml";
    pub const VERIFICATION_FILE: &str = "/verification/verification.yml";
    pub const SIGSTORE_TRUST: &str = "/sigstore-trust";
    pub const SIGSTORE_TRUST_FILE_NAME: &str = "sigstore-trust-config.json";
    pub const SIGSTORE_TRUST_FILE: &str = "/sigstore-trust/sigstore-trust-config.json";
    pub const DOCKER_CONFIG: &str = "/home/kubewarden/.docker";
    pub const CA: &str = "/ca";
    pub const CLIENT_CA: &str = "/client-ca";
    pub const CLIENT_CA_FILES: &str = "/ca/ca.crt,/client-ca/client-ca.crt";
    /// The OpenTelemetry collector's CA and client certificate: the controller's paths too
    /// (the chart mounts the same Secrets there), so its `OTEL_EXPORTER_OTLP_*CERTIFICATE`
    /// variables hold in the policy-server pods.
    pub const OTEL_CERTIFICATE: &str = "/otel-certificate";
    pub const OTEL_CLIENT_CERTIFICATE: &str = "/otel-client-certificate";
}

/// Key of the client CA in the ConfigMap named by `--client-ca-configmap-name`.
pub const CLIENT_CA_KEY: &str = "client-ca.crt";
/// Name of the webhook port of the policy-server Service (EndpointSlices match ports by name).
pub const SERVICE_WEBHOOK_PORT_NAME: &str = "policy-server";
pub const SERVICE_METRICS_PORT_NAME: &str = "metrics";
/// Names of the container ports declared on policy-server pods.
pub const CONTAINER_WEBHOOK_PORT_NAME: &str = "webhook";
pub const CONTAINER_READINESS_PORT_NAME: &str = "readiness";
pub const CONTAINER_METRICS_PORT_NAME: &str = "metrics";
/// Path of the policy-server's readiness endpoint.
pub const READINESS_PATH: &str = "/readiness";

/// `dnsPolicy` values: host-network pods need the `WithHostNet` variant to keep resolving
/// cluster names.
pub const DNS_POLICY_CLUSTER_FIRST: &str = "ClusterFirst";
pub const DNS_POLICY_HOST_NETWORK: &str = "ClusterFirstWithHostNet";

/// Name of every child object of the PolicyServer.
pub fn resource_name(ps: &PolicyServer) -> String {
    naming::policy_server_resource_name(&ps.name_any())
}

/// DNS name the apiserver uses to reach the policy-server Service; its certificate must name it.
pub fn service_dns_name(ps: &PolicyServer, options: &Options) -> String {
    format!(
        "{}.{}.svc",
        resource_name(ps),
        options.deployments_namespace
    )
}

/// Labels every child object carries.
pub fn common_labels(ps: &PolicyServer) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            labels::COMPONENT.to_string(),
            labels::COMPONENT_POLICY_SERVER.to_string(),
        ),
        (labels::INSTANCE.to_string(), resource_name(ps)),
        (
            labels::PART_OF.to_string(),
            labels::PART_OF_KUBEWARDEN.to_string(),
        ),
        (
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_CONTROLLER.to_string(),
        ),
    ])
}

/// Labels that select the pods of a PolicyServer (the PDB and the controller's own lookups).
pub fn pod_selector_labels(ps: &PolicyServer) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::INSTANCE.to_string(), resource_name(ps)),
        (
            labels::PART_OF.to_string(),
            labels::PART_OF_KUBEWARDEN.to_string(),
        ),
        (labels::POLICY_SERVER.to_string(), ps.name_any()),
    ])
}

/// Value of the Deployment selector label `app`.
pub fn app_label(ps: &PolicyServer) -> String {
    format!("kubewarden-{}", resource_name(ps))
}

fn metadata(ps: &PolicyServer, options: &Options, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(resource_name(ps)),
        namespace: Some(options.deployments_namespace.clone()),
        labels: Some(labels),
        owner_references: ps.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

fn with_policy_server_label(ps: &PolicyServer) -> BTreeMap<String, String> {
    let mut labels = common_labels(ps);
    labels.insert(labels::POLICY_SERVER.to_string(), ps.name_any());
    labels
}

/// The Secret with the policy-server's serving certificate.
pub fn desired_secret(ps: &PolicyServer, options: &Options, cert: &IssuedCertificate) -> Secret {
    // The PolicyServer label lets the controller see a deleted or edited Secret at once.
    let mut meta = metadata(ps, options, with_policy_server_label(ps));
    meta.annotations = Some(BTreeMap::from([(
        annotations::CERT_FORMAT_VERSION.to_string(),
        annotations::CERT_FORMAT_VERSION_VALUE.to_string(),
    )]));
    Secret {
        metadata: meta,
        type_: Some("Opaque".to_string()),
        data: Some(cert.secret_data()),
        ..Secret::default()
    }
}

/// The `sources.yml` of a PolicyServer.
pub fn sources_config(ps: &PolicyServer) -> SourcesConfig {
    SourcesConfig::from_policy_server(
        ps.spec.insecure_sources.as_deref().unwrap_or_default(),
        &ps.spec.source_authorities.clone().unwrap_or_default(),
    )
}

/// The ConfigMap with `policies.yml` (every policy bound to the PolicyServer) and `sources.yml`.
pub fn desired_config_map(
    ps: &PolicyServer,
    options: &Options,
    policies: &PoliciesConfig,
) -> ConfigMap {
    ConfigMap {
        metadata: metadata(ps, options, with_policy_server_label(ps)),
        data: Some(BTreeMap::from([
            (naming::POLICIES_CONFIG_KEY.to_string(), policies.to_json()),
            (
                naming::SOURCES_CONFIG_KEY.to_string(),
                sources_config(ps).to_json(),
            ),
        ])),
        ..ConfigMap::default()
    }
}

/// The configuration version in the pod template (label `kubewarden/config-version`): a change
/// rolls the pods. With `policyReloadMode: rollout` it is the ConfigMap's resource version, so
/// every policy change rolls them. In place, the running pods read a policy change from
/// their mounted ConfigMap; the version is then a digest of the module sources only, whose
/// change still needs new pods.
pub fn config_version(ps: &PolicyServer, config_map: &ConfigMap) -> String {
    match ps.spec.effective_policy_reload_mode() {
        PolicyReloadMode::Rollout => config_map.resource_version().unwrap_or_default(),
        PolicyReloadMode::InPlace => {
            let sources = config_map_entry(config_map, naming::SOURCES_CONFIG_KEY);
            format!("in-place-{}", short_digest(sources))
        }
    }
}

/// The text under `key` in a ConfigMap's data; empty when absent.
pub fn config_map_entry<'a>(config_map: &'a ConfigMap, key: &str) -> &'a str {
    config_map
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .map_or("", String::as_str)
}

/// The PodDisruptionBudget, only when the spec asks for one.
pub fn desired_pdb(ps: &PolicyServer, options: &Options) -> Option<PodDisruptionBudget> {
    if ps.spec.min_available.is_none() && ps.spec.max_unavailable.is_none() {
        return None;
    }
    Some(PodDisruptionBudget {
        metadata: metadata(ps, options, with_policy_server_label(ps)),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: ps.spec.min_available.clone(),
            max_unavailable: ps.spec.max_unavailable.clone(),
            selector: Some(LabelSelector {
                match_labels: Some(pod_selector_labels(ps)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

/// The Service the webhooks and Prometheus reach the policy-servers through.
pub fn desired_service(ps: &PolicyServer, options: &Options) -> Service {
    let mut ports = vec![ServicePort {
        name: Some(SERVICE_WEBHOOK_PORT_NAME.to_string()),
        port: defaults::SERVICE_WEBHOOK_PORT,
        target_port: Some(IntOrString::Int(ps.spec.webhook_port)),
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    }];
    if options.enable_metrics {
        ports.push(ServicePort {
            name: Some(SERVICE_METRICS_PORT_NAME.to_string()),
            port: ps
                .spec
                .effective_metrics_port(options.policy_server_metrics_port),
            target_port: Some(IntOrString::Int(options.policy_server_metrics_port)),
            protocol: Some("TCP".to_string()),
            ..ServicePort::default()
        });
    }
    let selector = BTreeMap::from([
        (labels::INSTANCE.to_string(), resource_name(ps)),
        (
            labels::PART_OF.to_string(),
            labels::PART_OF_KUBEWARDEN.to_string(),
        ),
    ]);
    Service {
        metadata: metadata(ps, options, with_policy_server_label(ps)),
        spec: Some(ServiceSpec {
            ports: Some(ports),
            selector: Some(selector),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// User labels first, so that the labels the controller relies on always win.
fn merged(
    user: Option<&BTreeMap<String, String>>,
    system: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut all = user.cloned().unwrap_or_default();
    all.extend(system);
    all
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// The policy-server's environment: the controller's settings, then the user's `spec.env`, then
/// the settings that follow from other spec fields. A later entry with the same name replaces an
/// earlier one in place (the container runtime would use the last one, and server-side apply
/// refuses duplicates).
fn container_env(ps: &PolicyServer, options: &Options) -> Vec<EnvVar> {
    let spec = &ps.spec;
    let mut vars = vec![
        env("KUBEWARDEN_CERT_FILE", paths::CERT_FILE),
        env("KUBEWARDEN_KEY_FILE", paths::KEY_FILE),
        env("KUBEWARDEN_PORT", spec.webhook_port.to_string()),
        env(
            "KUBEWARDEN_READINESS_PROBE_PORT",
            spec.readiness_probe_port.to_string(),
        ),
        env("KUBEWARDEN_POLICIES_DOWNLOAD_DIR", paths::TMP),
        env("KUBEWARDEN_POLICIES", paths::POLICIES_FILE),
        env("KUBEWARDEN_SIGSTORE_CACHE_DIR", paths::SIGSTORE_CACHE),
    ];
    // Before the PolicyServer's own variables, which may redirect its telemetry.
    vars.extend(otlp_env(options));
    vars.extend(spec.env.iter().flatten().cloned());
    if options.always_accept_admission_reviews_on_deployments_namespace {
        vars.push(env(
            "KUBEWARDEN_ALWAYS_ACCEPT_ADMISSION_REVIEWS_ON_NAMESPACE",
            options.deployments_namespace.clone(),
        ));
    }
    if spec.verification_config.is_some() {
        vars.push(env(
            "KUBEWARDEN_VERIFICATION_CONFIG_PATH",
            paths::VERIFICATION_FILE,
        ));
    }
    if spec.sigstore_trust_config.is_some() {
        vars.push(env(
            "KUBEWARDEN_SIGSTORE_TRUST_CONFIG_PATH",
            paths::SIGSTORE_TRUST_FILE,
        ));
    }
    if spec.image_pull_secret.is_some() {
        vars.push(env(
            "KUBEWARDEN_DOCKER_CONFIG_JSON_PATH",
            paths::DOCKER_CONFIG,
        ));
    }
    if !sources_config(ps).is_empty() {
        vars.push(env("KUBEWARDEN_SOURCES_PATH", paths::SOURCES_FILE));
    }
    if options.enable_metrics {
        vars.push(env("KUBEWARDEN_ENABLE_METRICS", "true"));
        vars.push(env(
            "KUBEWARDEN_METRICS_PORT",
            options.policy_server_metrics_port.to_string(),
        ));
    }
    if options.telemetry.tracing {
        vars.push(env("KUBEWARDEN_LOG_FMT", "otlp"));
    }
    if options.client_ca_configmap_name.is_some() {
        vars.push(env("KUBEWARDEN_CLIENT_CA_FILE", paths::CLIENT_CA_FILES));
    }
    if spec.effective_policy_reload_mode() == PolicyReloadMode::InPlace {
        vars.push(env("KUBEWARDEN_RELOAD_POLICIES", "true"));
    }
    last_wins(vars)
}

/// Where the policy-server exports OpenTelemetry: the injected sidecar collector, or the
/// controller's own OTLP settings.
fn otlp_env(options: &Options) -> Vec<EnvVar> {
    let telemetry = &options.telemetry;
    if !telemetry.exports(options.enable_metrics) {
        return Vec::new();
    }
    if telemetry.sidecar {
        // The sidecar serves Prometheus on the metrics port (upstream's layout), so the
        // policy-server only pushes to it.
        return vec![
            env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4317"),
            env("KUBEWARDEN_PROMETHEUS_METRICS", "false"),
        ];
    }
    telemetry
        .otlp_env
        .iter()
        .map(|(name, value)| env(name, value.clone()))
        .collect()
}

/// The OpenTelemetry Operator's annotation that injects the collector sidecar.
pub const OTEL_SIDECAR_ANNOTATION: &str = "sidecar.opentelemetry.io/inject";

/// The PolicyServer's pod annotations, and the sidecar injection in sidecar mode.
fn pod_annotations(ps: &PolicyServer, options: &Options) -> Option<BTreeMap<String, String>> {
    let mut annotations = ps.spec.annotations.clone();
    if options.telemetry.sidecar && options.telemetry.exports(options.enable_metrics) {
        annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(OTEL_SIDECAR_ANNOTATION.to_string(), "true".to_string());
    }
    annotations
}

fn last_wins(vars: Vec<EnvVar>) -> Vec<EnvVar> {
    let mut result: Vec<EnvVar> = Vec::with_capacity(vars.len());
    for var in vars {
        match result.iter_mut().find(|v| v.name == var.name) {
            Some(existing) => *existing = var,
            None => result.push(var),
        }
    }
    result
}

fn volume(name: &str) -> Volume {
    Volume {
        name: name.to_string(),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        read_only: Some(path != paths::TMP),
        ..VolumeMount::default()
    }
}

fn item(key: &str, path: &str) -> Option<Vec<KeyToPath>> {
    Some(vec![KeyToPath {
        key: key.to_string(),
        path: path.to_string(),
        mode: None,
    }])
}

fn secret_volume(name: &str, secret: &str, items: Option<Vec<KeyToPath>>) -> Volume {
    Volume {
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_string()),
            items,
            ..SecretVolumeSource::default()
        }),
        ..volume(name)
    }
}

fn config_map_volume(name: &str, config_map: &str, items: Option<Vec<KeyToPath>>) -> Volume {
    Volume {
        config_map: Some(ConfigMapVolumeSource {
            name: config_map.to_string(),
            items,
            ..ConfigMapVolumeSource::default()
        }),
        ..volume(name)
    }
}

fn volumes(ps: &PolicyServer, options: &Options) -> (Vec<Volume>, Vec<VolumeMount>) {
    let name = resource_name(ps);
    let mut volumes = vec![
        Volume {
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..volume("tmp")
        },
        secret_volume("certs", &name, None),
        config_map_volume(
            "policies",
            &name,
            item(naming::POLICIES_CONFIG_KEY, naming::POLICIES_CONFIG_KEY),
        ),
        config_map_volume(
            "sources",
            &name,
            item(naming::SOURCES_CONFIG_KEY, naming::SOURCES_CONFIG_KEY),
        ),
    ];
    let mut mounts = vec![
        mount("tmp", paths::TMP),
        mount("certs", paths::CERTS),
        mount("policies", paths::CONFIG),
        mount("sources", paths::SOURCES),
    ];
    if let Some(config_map) = &ps.spec.verification_config {
        volumes.push(config_map_volume(
            "verification",
            config_map,
            item(
                naming::VERIFICATION_CONFIG_KEY,
                paths::VERIFICATION_FILE_NAME,
            ),
        ));
        mounts.push(mount("verification", paths::VERIFICATION));
    }
    if let Some(config_map) = &ps.spec.sigstore_trust_config {
        volumes.push(config_map_volume(
            "sigstore-trust",
            config_map,
            item(
                naming::SIGSTORE_TRUST_CONFIG_KEY,
                paths::SIGSTORE_TRUST_FILE_NAME,
            ),
        ));
        mounts.push(mount("sigstore-trust", paths::SIGSTORE_TRUST));
    }
    if let Some(secret) = &ps.spec.image_pull_secret {
        volumes.push(secret_volume(
            "docker-config",
            secret,
            item(".dockerconfigjson", "config.json"),
        ));
        mounts.push(mount("docker-config", paths::DOCKER_CONFIG));
    }
    if let Some(config_map) = &options.client_ca_configmap_name {
        volumes.push(secret_volume(
            "ca",
            naming::CA_SECRET_NAME,
            item(naming::CA_CERT_KEY, naming::CA_CERT_KEY),
        ));
        volumes.push(config_map_volume(
            "client-ca",
            config_map,
            item(CLIENT_CA_KEY, CLIENT_CA_KEY),
        ));
        mounts.push(mount("ca", paths::CA));
        mounts.push(mount("client-ca", paths::CLIENT_CA));
    }
    let telemetry = &options.telemetry;
    if telemetry.exports(options.enable_metrics) && !telemetry.sidecar {
        for (name, secret, path) in [
            (
                "otel-certificate",
                &telemetry.certificate_secret,
                paths::OTEL_CERTIFICATE,
            ),
            (
                "otel-client-certificate",
                &telemetry.client_certificate_secret,
                paths::OTEL_CLIENT_CERTIFICATE,
            ),
        ] {
            if let Some(secret) = secret {
                volumes.push(secret_volume(name, secret, None));
                mounts.push(mount(name, path));
            }
        }
    }
    (volumes, mounts)
}

/// The container defaults when `spec.securityContexts.container` is not set: nothing a
/// policy-server needs beyond reading its files and listening on its ports.
pub fn default_container_security_context() -> SecurityContext {
    SecurityContext {
        read_only_root_filesystem: Some(true),
        privileged: Some(false),
        allow_privilege_escalation: Some(false),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            add: None,
        }),
        ..SecurityContext::default()
    }
}

pub fn default_pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: port,
        protocol: Some("TCP".to_string()),
        ..ContainerPort::default()
    }
}

/// Ports the policy-server binds. Declaring them lets kube-scheduler refuse to put two
/// host-network replicas that bind the same port on one node (it turns them into host ports).
pub fn container_ports(ps: &PolicyServer, options: &Options) -> Vec<ContainerPort> {
    let mut ports = vec![
        container_port(CONTAINER_WEBHOOK_PORT_NAME, ps.spec.webhook_port),
        container_port(CONTAINER_READINESS_PORT_NAME, ps.spec.readiness_probe_port),
    ];
    if options.enable_metrics {
        ports.push(container_port(
            CONTAINER_METRICS_PORT_NAME,
            options.policy_server_metrics_port,
        ));
    }
    ports
}

fn resources(ps: &PolicyServer) -> Option<ResourceRequirements> {
    if ps.spec.limits.is_none() && ps.spec.requests.is_none() {
        return None;
    }
    Some(ResourceRequirements {
        limits: ps.spec.limits.clone(),
        requests: ps.spec.requests.clone(),
        ..ResourceRequirements::default()
    })
}

/// How pods are replaced on a new configuration. In host network mode a surge pod needs the
/// same host ports as the pod it replaces, so on a node it cannot leave it would wait Pending
/// forever and the rollout never finish: the old pod goes first instead.
fn rollout_strategy(options: &Options) -> DeploymentStrategy {
    let rolling_update = options.host_network.then_some(RollingUpdateDeployment {
        max_surge: Some(IntOrString::Int(0)),
        max_unavailable: Some(IntOrString::Int(1)),
    });
    DeploymentStrategy {
        type_: Some("RollingUpdate".to_string()),
        rolling_update,
    }
}

/// The Deployment running the policy-servers. `config_version` is the resource version of the
/// policy-server ConfigMap: it is part of the pod template, so a new configuration rolls the
/// pods.
pub fn desired_deployment(
    ps: &PolicyServer,
    options: &Options,
    config_version: &str,
) -> Deployment {
    let name = resource_name(ps);
    let spec = &ps.spec;
    let config_version_entry = (
        labels::CONFIG_VERSION.to_string(),
        config_version.to_string(),
    );

    let mut meta = metadata(
        ps,
        options,
        merged(spec.labels.as_ref(), with_policy_server_label(ps)),
    );
    meta.annotations = Some(merged(
        spec.annotations.as_ref(),
        BTreeMap::from([config_version_entry.clone()]),
    ));

    let mut pod_labels = with_policy_server_label(ps);
    pod_labels.insert(labels::APP.to_string(), app_label(ps));
    pod_labels.insert(config_version_entry.0, config_version_entry.1);

    let (volumes, volume_mounts) = volumes(ps, options);
    let security = spec.security_contexts.clone().unwrap_or_default();
    let container = Container {
        name: name.clone(),
        image: Some(spec.image.clone()),
        env: Some(container_env(ps, options)),
        ports: Some(container_ports(ps, options)),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some(READINESS_PATH.to_string()),
                port: IntOrString::Int(spec.readiness_probe_port),
                scheme: Some("HTTP".to_string()),
                ..HTTPGetAction::default()
            }),
            ..Probe::default()
        }),
        security_context: Some(
            security
                .container
                .unwrap_or_else(default_container_security_context),
        ),
        resources: resources(ps),
        volume_mounts: Some(volume_mounts),
        ..Container::default()
    };
    let image_pull_secrets = (!options.image_pull_secrets.is_empty()).then(|| {
        options
            .image_pull_secrets
            .iter()
            .map(|name| k8s_openapi::api::core::v1::LocalObjectReference { name: name.clone() })
            .collect()
    });
    let pod = PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        security_context: Some(security.pod.unwrap_or_else(default_pod_security_context)),
        image_pull_secrets,
        service_account_name: spec.service_account_name.clone(),
        tolerations: spec.tolerations.clone(),
        affinity: spec.affinity.clone(),
        priority_class_name: spec.priority_class_name.clone(),
        host_network: Some(options.host_network),
        dns_policy: Some(
            if options.host_network {
                DNS_POLICY_HOST_NETWORK
            } else {
                DNS_POLICY_CLUSTER_FIRST
            }
            .to_string(),
        ),
        ..PodSpec::default()
    };
    Deployment {
        metadata: meta,
        spec: Some(DeploymentSpec {
            // Unset: left to whoever scales the Deployment (server-side apply then owns no
            // replicas field, so an autoscaler's changes stay).
            replicas: spec.replicas,
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([(labels::APP.to_string(), app_label(ps))])),
                ..LabelSelector::default()
            },
            strategy: Some(rollout_strategy(options)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(merged(spec.labels.as_ref(), pod_labels)),
                    annotations: pod_annotations(ps, options),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}
