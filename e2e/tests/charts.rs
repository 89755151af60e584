//! The Helm charts, rendered with `helm template` and checked two ways: the facts users rely
//! on (host network, affinity fallbacks, ports, policy modes) asserted one by one, and the whole
//! output compared with a golden file in `charts/tests/golden/` (regenerate after an intended
//! change with `UPDATE_GOLDEN=1 cargo test -p e2e --test charts`).

use std::path::Path;

use serde_json::{Value, json};
use test_cluster::helm::{self, find};
use test_cluster::repo_root;

const NAMESPACE: &str = "kubewarden";

fn values(name: &str) -> String {
    repo_root()
        .join("charts/tests/values")
        .join(name)
        .display()
        .to_string()
}

/// Renders `chart` and checks it against `charts/tests/golden/<case>.yaml`.
fn render(helm: &Path, case: &str, chart: &str, release: &str, extra: &[&str]) -> Vec<Value> {
    let manifest = helm::template(helm, chart, release, NAMESPACE, extra)
        .unwrap_or_else(|e| panic!("{case}: {e:#}"));
    let golden = repo_root()
        .join("charts/tests/golden")
        .join(format!("{case}.yaml"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &manifest).expect("golden written");
    } else {
        let expected = std::fs::read_to_string(&golden)
            .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_GOLDEN=1", golden.display()));
        pretty_assertions::assert_eq!(
            manifest,
            expected,
            "{case} differs from {}",
            golden.display()
        );
    }
    helm::objects(&manifest).expect("rendered YAML parses")
}

fn controller_pod(objects: &[Value]) -> &Value {
    &find(objects, "Deployment", "kubewarden-controller").expect("controller Deployment")["spec"]["template"]
        ["spec"]
}

fn args(pod: &Value) -> Vec<String> {
    pod["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn charts_lint() {
    let Some(helm) = helm::helm("charts_lint") else {
        return;
    };
    for chart in [
        "kubewarden-crds",
        "kubewarden-controller",
        "kubewarden-defaults",
    ] {
        let path = helm::chart(chart);
        helm::run(&helm, &["lint", "--strict", &path.to_string_lossy()]).expect("lint passes");
    }
}

#[test]
fn controller_defaults() {
    let Some(helm) = helm::helm("controller_defaults") else {
        return;
    };
    let objects = render(
        &helm,
        "controller-default",
        "kubewarden-controller",
        "kubewarden-controller",
        &[],
    );
    let pod = controller_pod(&objects);
    assert!(pod.get("hostNetwork").is_none());
    assert!(pod.get("dnsPolicy").is_none());
    let args = args(pod);
    assert!(args.contains(&"--leader-elect".to_string()));
    assert!(args.contains(&"--deployments-namespace=kubewarden".to_string()));
    assert!(!args.contains(&"--host-network".to_string()));
    assert_eq!(
        pod["containers"][0]["image"],
        "ghcr.io/kubewarden-rs/controller:0.1.0"
    );
    let cron = find(&objects, "CronJob", "audit-scanner").expect("audit-scanner CronJob");
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    let scanner = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(scanner["command"], json!(["/audit-scanner"]));
    let scanner_args = scanner["args"].to_string();
    assert!(
        scanner_args.contains("--report-kind=openreports"),
        "{scanner_args}"
    );
    assert!(
        scanner_args.contains("--ignore-namespace=kube-system"),
        "{scanner_args}"
    );
    // helm uninstall first deletes the PolicyServers and waits for their webhooks to go.
    let hook = find(&objects, "Job", "kubewarden-controller-pre-delete").expect("pre-delete Job");
    assert_eq!(
        hook["metadata"]["annotations"]["helm.sh/hook"],
        "pre-delete"
    );
    let hook_pod = &hook["spec"]["template"]["spec"];
    assert_eq!(hook_pod["serviceAccountName"], "kubewarden-controller");
    assert!(
        hook_pod["containers"][0]["args"]
            .to_string()
            .contains("--cleanup")
    );
    assert_eq!(
        hook_pod["containers"][0]["image"],
        "ghcr.io/kubewarden-rs/controller:0.1.0"
    );
    let cluster_role_rules = find(&objects, "ClusterRole", "kubewarden-controller")
        .expect("ClusterRole")["rules"]
        .to_string();
    assert!(
        cluster_role_rules.contains(r#"{"apiGroups":["policies.kubewarden.io"],"resources":["policyservers"],"verbs":["delete"]}"#),
        "{cluster_role_rules}"
    );
    // Upstream's values: its kubectl image and command.
    let upstream = helm::template(
        &helm,
        "kubewarden-controller",
        "kubewarden-controller",
        NAMESPACE,
        &[
            "--set",
            "preDeleteJob.image.repository=rancher/kubectl",
            "--set",
            "preDeleteJob.image.tag=v1.34.1",
        ],
    )
    .expect("renders");
    let upstream = helm::objects(&upstream).expect("parses");
    let container = &find(&upstream, "Job", "kubewarden-controller-pre-delete").expect("Job")["spec"]
        ["template"]["spec"]["containers"][0];
    // Prefixed with global.cattle.systemDefaultRegistry, as upstream's template does.
    assert_eq!(container["image"], "ghcr.io/rancher/kubectl:v1.34.1");
    assert_eq!(
        container["command"],
        json!([
            "kubectl",
            "delete",
            "--all",
            "policyservers.policies.kubewarden.io"
        ])
    );
    let without = helm::template(
        &helm,
        "kubewarden-controller",
        "kubewarden-controller",
        NAMESPACE,
        &["--set", "preDeleteHook.enabled=false"],
    )
    .expect("renders");
    let without = helm::objects(&without).expect("parses");
    assert!(find(&without, "Job", "kubewarden-controller-pre-delete").is_none());

    // Least privilege: Secrets, Deployments... only in the release namespace.
    let role = find(&objects, "Role", "kubewarden-controller").expect("Role");
    assert_eq!(role["metadata"]["namespace"], NAMESPACE);
    let cluster_role = find(&objects, "ClusterRole", "kubewarden-controller").expect("ClusterRole");
    assert!(!cluster_role["rules"].to_string().contains("secrets"));
}

#[test]
fn controller_host_network() {
    let Some(helm) = helm::helm("controller_host_network") else {
        return;
    };
    let objects = render(
        &helm,
        "controller-host-network",
        "kubewarden-controller",
        "kubewarden-controller",
        &["--set", "hostNetwork=true"],
    );
    let pod = controller_pod(&objects);
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert!(args(pod).contains(&"--host-network".to_string()));
    assert_eq!(pod["containers"][0]["ports"][0]["containerPort"], 8081);

    let refused = helm::template(
        &helm,
        "kubewarden-controller",
        "k",
        NAMESPACE,
        &[
            "--set",
            "hostNetwork=true",
            "--set",
            "telemetry.mode=sidecar",
            "--set",
            "telemetry.metrics=true",
        ],
    )
    .expect_err("sidecar telemetry and host network are incompatible");
    assert!(refused.to_string().contains("incompatible"), "{refused}");
    // Upstream's default mode is sidecar: with telemetry off it installs in host network mode.
    helm::template(
        &helm,
        "kubewarden-controller",
        "k",
        NAMESPACE,
        &[
            "--set",
            "hostNetwork=true",
            "--set",
            "telemetry.mode=sidecar",
        ],
    )
    .expect("sidecar mode without telemetry renders");
}

#[test]
fn controller_telemetry_sidecar() {
    let Some(helm) = helm::helm("controller_telemetry_sidecar") else {
        return;
    };
    let objects = render(
        &helm,
        "controller-telemetry-sidecar",
        "kubewarden-controller",
        "kubewarden-controller",
        &[
            "--set",
            "telemetry.mode=sidecar",
            "--set",
            "telemetry.metrics=true",
            "--set",
            "telemetry.tracing=true",
        ],
    );
    let collector = find(&objects, "OpenTelemetryCollector", "kubewarden").expect("collector");
    assert_eq!(collector["spec"]["mode"], "sidecar");
    let config = &collector["spec"]["config"];
    assert_eq!(config["exporters"]["prometheus"]["endpoint"], ":8080");
    assert_eq!(
        config["service"]["pipelines"]["traces"]["exporters"],
        json!(["otlp/jaeger"])
    );
    let deployment = find(&objects, "Deployment", "kubewarden-controller").expect("controller");
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["annotations"]["sidecar.opentelemetry.io/inject"],
        "true"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    for flag in [
        "--enable-otel-sidecar",
        "--enable-tracing",
        "--enable-metrics",
    ] {
        assert!(args(pod).contains(&flag.to_string()), "{flag}");
    }
    assert_eq!(
        pod["containers"][0]["env"],
        json!([{"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://localhost:4317"}])
    );
}

#[test]
fn controller_mtls() {
    let Some(helm) = helm::helm("controller_mtls") else {
        return;
    };
    let objects = render(
        &helm,
        "controller-mtls",
        "kubewarden-controller",
        "kubewarden-controller",
        &[
            "--set",
            "mTLS.enable=true",
            "--set",
            "mTLS.configMapName=client-ca",
        ],
    );
    let pod = controller_pod(&objects);
    assert!(args(pod).contains(&"--client-ca-configmap-name=client-ca".to_string()));
    // The audit-scanner presents the client certificate the controller issues from
    // kubewarden-ca, which every policy-server in mTLS mode trusts.
    let cron = find(&objects, "CronJob", "audit-scanner").expect("audit-scanner CronJob");
    let job = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let scanner_args = args(job);
    for arg in [
        "--client-cert=/client-cert/tls.crt",
        "--client-key=/client-cert/tls.key",
    ] {
        assert!(scanner_args.contains(&arg.to_string()), "{scanner_args:?}");
    }
    let volumes = job["volumes"].to_string();
    assert!(
        volumes.contains("kubewarden-audit-scanner-client-cert"),
        "{volumes}"
    );

    let refused = helm::template(
        &helm,
        "kubewarden-controller",
        "k",
        NAMESPACE,
        &["--set", "mTLS.enable=true"],
    )
    .expect_err("mTLS needs the client CA ConfigMap");
    assert!(
        refused.to_string().contains("mTLS.configMapName"),
        "{refused}"
    );
}

#[test]
fn seed_affinity_values() {
    let Some(helm) = helm::helm("seed_affinity_values") else {
        return;
    };
    let seed_controller = values("controller-seed-affinity.yaml");
    let objects = render(
        &helm,
        "controller-seed-affinity",
        "kubewarden-controller",
        "kubewarden-controller",
        &["-f", &seed_controller],
    );
    let pod = controller_pod(&objects);
    let terms =
        &pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(terms["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        terms["labelSelector"]["matchExpressions"][0]["values"],
        json!(["policy-server", "kubewarden-controller"])
    );
    // The pod carries the label that selector matches.
    let labels = &find(&objects, "Deployment", "kubewarden-controller").expect("Deployment")["spec"]
        ["template"]["metadata"]["labels"];
    assert_eq!(
        labels["app.kubernetes.io/component"],
        "kubewarden-controller"
    );

    let seed_defaults = values("defaults-seed-affinity.yaml");
    let objects = render(
        &helm,
        "defaults-seed-affinity",
        "kubewarden-defaults",
        "kubewarden-defaults",
        &["-f", &seed_defaults],
    );
    let ps = find(&objects, "PolicyServer", "default").expect("PolicyServer");
    assert_eq!(
        ps["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            [0]["topologyKey"],
        "kubernetes.io/hostname"
    );
}

#[test]
fn global_affinity_is_the_fallback() {
    let Some(helm) = helm::helm("global_affinity_is_the_fallback") else {
        return;
    };
    let global = values("global-affinity.yaml");
    let objects = render(
        &helm,
        "controller-global-affinity",
        "kubewarden-controller",
        "kubewarden-controller",
        &["-f", &global],
    );
    assert!(controller_pod(&objects)["affinity"]["nodeAffinity"].is_object());
    let cron = find(&objects, "CronJob", "audit-scanner").expect("CronJob");
    assert!(
        cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
            .is_object()
    );
    let objects = render(
        &helm,
        "defaults-global-affinity",
        "kubewarden-defaults",
        "kubewarden-defaults",
        &["-f", &global],
    );
    let ps = find(&objects, "PolicyServer", "default").expect("PolicyServer");
    assert!(ps["spec"]["affinity"]["nodeAffinity"].is_object());
    // Its own affinity wins over the global one.
    let seed = values("defaults-seed-affinity.yaml");
    let manifest = helm::template(
        &helm,
        "kubewarden-defaults",
        "d",
        NAMESPACE,
        &["-f", &global, "-f", &seed],
    )
    .expect("renders");
    let objects = helm::objects(&manifest).expect("parses");
    let ps = find(&objects, "PolicyServer", "default").expect("PolicyServer");
    assert!(ps["spec"]["affinity"].get("nodeAffinity").is_none());
}

#[test]
fn custom_ports() {
    let Some(helm) = helm::helm("custom_ports") else {
        return;
    };
    let ports = values("custom-ports.yaml");
    let objects = render(
        &helm,
        "controller-custom-ports",
        "kubewarden-controller",
        "kubewarden-controller",
        &["-f", &ports],
    );
    let args = args(controller_pod(&objects));
    for expected in [
        "--health-probe-bind-address=:63001",
        "--metrics-bind-address=:63002",
        "--webhook-server-port=63000",
        "--policy-server-metrics-port=63004",
        "--enable-metrics",
    ] {
        assert!(
            args.contains(&expected.to_string()),
            "{expected} in {args:?}"
        );
    }
    let objects = render(
        &helm,
        "defaults-custom-ports",
        "kubewarden-defaults",
        "kubewarden-defaults",
        &["-f", &ports],
    );
    let spec = &find(&objects, "PolicyServer", "default").expect("PolicyServer")["spec"];
    assert_eq!(
        (
            spec["webhookPort"].clone(),
            spec["readinessProbePort"].clone(),
            spec["metricsPort"].clone()
        ),
        (json!(64005), json!(63003), json!(63004))
    );
    // Unset ports are left to the CRD defaults.
    let objects = render(
        &helm,
        "defaults-default",
        "kubewarden-defaults",
        "kubewarden-defaults",
        &[],
    );
    let spec = &find(&objects, "PolicyServer", "default").expect("PolicyServer")["spec"];
    assert!(spec.get("webhookPort").is_none() && spec.get("readinessProbePort").is_none());
    assert!(
        spec.get("policyReloadMode").is_none(),
        "rollout, as upstream"
    );
    assert_eq!(spec["image"], "ghcr.io/kubewarden-rs/policy-server:0.1.0");
    let objects = render(
        &helm,
        "defaults-in-place",
        "kubewarden-defaults",
        "kubewarden-defaults",
        &["--set", "policyServer.policyReloadMode=inPlace"],
    );
    let spec = &find(&objects, "PolicyServer", "default").expect("PolicyServer")["spec"];
    assert_eq!(spec["policyReloadMode"], "inPlace");
    assert!(
        find(&objects, "ClusterAdmissionPolicy", "no-privileged-pod").is_none(),
        "recommended policies are opt-in"
    );
}

#[test]
fn recommended_policies_modes() {
    let Some(helm) = helm::helm("recommended_policies_modes") else {
        return;
    };
    let objects = render(
        &helm,
        "defaults-recommended-monitor",
        "kubewarden-defaults",
        "kubewarden-defaults",
        &["--set", "recommendedPolicies.enabled=true"],
    );
    let policies: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "ClusterAdmissionPolicy")
        .collect();
    assert_eq!(policies.len(), 6);
    for policy in &policies {
        assert_eq!(policy["spec"]["mode"], "monitor");
        assert_eq!(
            policy["spec"]["failurePolicy"], "Ignore",
            "monitor mode implies Ignore"
        );
    }
    let mutating: Vec<&str> = policies
        .iter()
        .filter(|p| p["spec"]["mutating"] == true)
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        mutating,
        [
            "no-privilege-escalation",
            "do-not-run-as-root",
            "drop-capabilities"
        ]
    );

    let manifest = helm::template(
        &helm,
        "kubewarden-defaults",
        "d",
        NAMESPACE,
        &[
            "--set",
            "recommendedPolicies.enabled=true",
            "--set",
            "recommendedPolicies.defaultPolicyMode=protect",
            "--set",
            "recommendedPolicies.skipAdditionalNamespaces={team-x}",
        ],
    )
    .expect("renders");
    for policy in helm::objects(&manifest)
        .expect("parses")
        .iter()
        .filter(|o| o["kind"] == "ClusterAdmissionPolicy")
    {
        assert_eq!(policy["spec"]["failurePolicy"], "Fail");
        assert!(
            policy["spec"]["namespaceSelector"]
                .to_string()
                .contains("team-x")
        );
    }
    let refused = helm::template(
        &helm,
        "kubewarden-defaults",
        "d",
        NAMESPACE,
        &[
            "--set",
            "recommendedPolicies.enabled=true",
            "--set",
            "recommendedPolicies.defaultPolicyMode=audit",
        ],
    )
    .expect_err("unknown mode");
    assert!(
        refused.to_string().contains("defaultPolicyMode"),
        "{refused}"
    );
}

#[test]
fn values_schema_refuses_wrong_types() {
    let Some(helm) = helm::helm("values_schema_refuses_wrong_types") else {
        return;
    };
    for (chart, set) in [
        ("kubewarden-controller", "ports.healthProbe=70000"),
        ("kubewarden-controller", "hostNetwork=yes"),
        ("kubewarden-defaults", "policyServer.webhookPort=0"),
    ] {
        let err = helm::template(&helm, chart, "x", NAMESPACE, &["--set", set]).expect_err(set);
        assert!(err.to_string().contains("schema"), "{set}: {err}");
    }
}

/// The value files a user of upstream's charts has (upstream's defaults, and every upstream key
/// set) lint and render, each value landing where upstream puts it.
#[test]
fn upstream_values_files_render_and_lint() {
    let Some(helm) = helm::helm("upstream_values_files_render_and_lint") else {
        return;
    };
    for (chart, case) in [
        ("kubewarden-controller", "upstream-controller-defaults"),
        ("kubewarden-controller", "upstream-controller-every-key"),
        ("kubewarden-defaults", "upstream-defaults-defaults"),
        ("kubewarden-defaults", "upstream-defaults-every-key"),
    ] {
        let file = values(&format!("{case}.yaml"));
        let path = helm::chart(chart);
        helm::run(
            &helm,
            &["lint", "--strict", "-f", &file, &path.to_string_lossy()],
        )
        .unwrap_or_else(|e| panic!("{case}: {e:#}"));
    }

    let objects = render(
        &helm,
        "upstream-controller-defaults",
        "kubewarden-controller",
        "kubewarden-controller",
        &["-f", &values("upstream-controller-defaults.yaml")],
    );
    let pod = controller_pod(&objects);
    assert_eq!(
        pod["containers"][0]["resources"],
        json!({"limits": {"cpu": "500m", "memory": "200Mi"}, "requests": {"cpu": "250m", "memory": "70Mi"}})
    );
    // Helm merges upstream's containerSecurityContext into this chart's default, which also
    // makes the root filesystem read-only.
    assert_eq!(
        pod["containers"][0]["securityContext"],
        json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": true})
    );
    let hook = find(&objects, "Job", "kubewarden-controller-pre-delete").expect("pre-delete Job");
    let hook_container = &hook["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        hook_container["image"],
        "ghcr.io/rancher/kuberlr-kubectl:v8.0.0"
    );
    assert_eq!(hook_container["resources"]["limits"]["memory"], "128Mi");

    let objects = render(
        &helm,
        "upstream-controller-every-key",
        "kubewarden-controller",
        "kubewarden-controller",
        &["-f", &values("upstream-controller-every-key.yaml")],
    );
    let deployment = find(&objects, "Deployment", "kw-controller").expect("fullnameOverride");
    assert_eq!(deployment["metadata"]["labels"]["team"], "platform");
    assert_eq!(
        deployment["metadata"]["labels"]["app.kubernetes.io/name"],
        "kw"
    );
    assert_eq!(
        deployment["metadata"]["annotations"]["owner"],
        "platform-team"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["annotations"],
        json!({"owner": "platform-team", "prometheus.io/scrape": "true"})
    );
    let container = &pod["containers"][0];
    // Custom telemetry: the collector's endpoint and certificates, then the user's variables.
    assert_eq!(
        container["env"],
        json!([
            {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "https://otel-collector.observability.svc:4317"},
            {"name": "OTEL_EXPORTER_OTLP_INSECURE", "value": "false"},
            {"name": "OTEL_EXPORTER_OTLP_CERTIFICATE", "value": "/otel-certificate/ca.crt"},
            {"name": "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "value": "/otel-client-certificate/tls.crt"},
            {"name": "OTEL_EXPORTER_OTLP_CLIENT_KEY", "value": "/otel-client-certificate/tls.key"},
            {"name": "HTTPS_PROXY", "value": "http://proxy.example.com:3128"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
        ])
    );
    for flag in [
        "--enable-tracing",
        "--opentelemetry-certificate-secret=otel-ca",
        "--opentelemetry-client-certificate-secret=otel-client",
    ] {
        assert!(args(pod).contains(&flag.to_string()), "{flag}");
    }
    assert_eq!(container["resources"]["limits"]["memory"], "300Mi");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        pod["imagePullSecrets"],
        json!([{"name": "registry-credentials"}, {"name": "legacy-credentials"}])
    );
    assert!(
        args(pod)
            .contains(&"--image-pull-secrets=registry-credentials,legacy-credentials".to_string())
    );
    for object in &objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        assert_eq!(
            object["metadata"]["annotations"]["owner"], "platform-team",
            "{kind} {} carries additionalAnnotations",
            object["metadata"]["name"]
        );
        if kind != "Job" {
            assert_eq!(
                object["metadata"]["labels"]["team"], "platform",
                "{kind} {} carries additionalLabels",
                object["metadata"]["name"]
            );
        }
    }
    let cron = find(&objects, "CronJob", "audit-scanner").expect("CronJob");
    let scanner_pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let scanner = &scanner_pod["containers"][0];
    assert_eq!(
        scanner["image"],
        "registry.example.com/kubewarden-rs/audit-scanner:v9.9.8"
    );
    assert_eq!(scanner["imagePullPolicy"], "Always");
    assert_eq!(scanner_pod["restartPolicy"], "OnFailure");
    assert_eq!(scanner_pod["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(scanner["resources"]["limits"]["memory"], "2Gi");
    let scanner_args = scanner["args"].to_string();
    for expected in [
        "--output-scan",
        "--disable-store",
        "--parallel-resources=50",
        "--report-kind=policyreport",
        "--ignore-namespace=scratch",
        "--client-cert=/client-cert/tls.crt",
    ] {
        assert!(
            scanner_args.contains(expected),
            "{expected}: {scanner_args}"
        );
    }
    // 0 leaves the setting to the audit-scanner, as upstream.
    assert!(
        !scanner_args.contains("--parallel-namespaces"),
        "{scanner_args}"
    );
    assert!(!scanner_args.contains("--page-size"), "{scanner_args}");

    let objects = render(
        &helm,
        "upstream-defaults-defaults",
        "kubewarden-defaults",
        "kubewarden-defaults",
        &["-f", &values("upstream-defaults-defaults.yaml")],
    );
    let escalation = find(
        &objects,
        "ClusterAdmissionPolicy",
        "no-privilege-escalation",
    )
    .expect("policy");
    assert_eq!(
        escalation["spec"]["module"],
        "registry://ghcr.io/kubewarden/policies/allow-privilege-escalation-psp:v1.0.10"
    );
    assert_eq!(
        escalation["spec"]["settings"],
        json!({"allowPrivilegeEscalation": false})
    );
    assert_eq!(
        escalation["spec"]["rules"],
        json!([{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"]}])
    );
    let privileged = find(&objects, "ClusterAdmissionPolicy", "no-privileged-pod").expect("policy");
    assert_eq!(
        privileged["spec"]["rules"].as_array().map(Vec::len),
        Some(4),
        "pods and the workload kinds, as upstream"
    );

    let objects = render(
        &helm,
        "upstream-defaults-every-key",
        "kubewarden-defaults",
        "kubewarden-defaults",
        &["-f", &values("upstream-defaults-every-key.yaml")],
    );
    let privileged = find(&objects, "ClusterAdmissionPolicy", "no-privileged-pod").expect("policy");
    assert_eq!(
        privileged["spec"]["module"],
        "registry://mirror.example.com/kubewarden/policies/pod-privileged:v1.0.11"
    );
    assert_eq!(
        privileged["spec"]["settings"],
        json!({"skip_init_containers": true, "skip_ephemeral_containers": true})
    );
    assert_eq!(privileged["spec"]["failurePolicy"], "Fail");
    assert_eq!(privileged["metadata"]["labels"]["team"], "platform");
    assert_eq!(
        privileged["metadata"]["annotations"]["owner"],
        "platform-team"
    );
    let server = find(&objects, "PolicyServer", "default").expect("PolicyServer");
    assert_eq!(
        server["spec"]["tolerations"][0]["value"], "kubewarden",
        "global.tolerations"
    );
    assert_eq!(
        server["spec"]["priorityClassName"],
        "system-cluster-critical"
    );
    assert_eq!(server["metadata"]["labels"]["team"], "platform");
    assert_eq!(
        server["spec"]["sourceAuthorities"]["registry.local:5443"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let role = find(
        &objects,
        "ClusterRole",
        "kubewarden-context-watcher-kubewarden-defaults",
    )
    .expect("ClusterRole");
    assert_eq!(
        role["rules"][1],
        json!({"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]})
    );
    assert_eq!(role["rules"][0]["verbs"], json!(["get", "list", "watch"]));
}

/// This chart's earlier value shapes keep working beside upstream's.
#[test]
fn earlier_value_shapes_still_render() {
    let Some(helm) = helm::helm("earlier_value_shapes_still_render") else {
        return;
    };
    let manifest = helm::template(
        &helm,
        "kubewarden-defaults",
        "d",
        NAMESPACE,
        &[
            "--set",
            "recommendedPolicies.enabled=true",
            "--set",
            "recommendedPolicies.hostPathsPolicy.module=kubewarden/policies/hostpaths-psp:v0.1.9",
            "--set-json",
            r#"recommendedPolicies.hostPathsPolicy.paths=[{"pathPrefix":"/data","readOnly":false}]"#,
            "--set-json",
            r#"recommendedPolicies.capabilitiesPolicy.allowed_capabilities=["CHOWN"]"#,
        ],
    )
    .expect("renders");
    let objects = helm::objects(&manifest).expect("parses");
    let host_paths = find(
        &objects,
        "ClusterAdmissionPolicy",
        "do-not-share-host-paths",
    )
    .expect("policy");
    assert_eq!(
        host_paths["spec"]["module"],
        "registry://ghcr.io/kubewarden/policies/hostpaths-psp:v0.1.9"
    );
    assert_eq!(
        host_paths["spec"]["settings"],
        json!({"allowedHostPaths": [{"pathPrefix": "/data", "readOnly": false}]})
    );
    let capabilities =
        find(&objects, "ClusterAdmissionPolicy", "drop-capabilities").expect("policy");
    assert_eq!(
        capabilities["spec"]["settings"],
        json!({"allowed_capabilities": ["CHOWN"], "required_drop_capabilities": ["ALL"], "default_add_capabilities": []})
    );

    let manifest = helm::template(
        &helm,
        "kubewarden-controller",
        "kubewarden-controller",
        NAMESPACE,
        &[
            "--set",
            "resources.limits.memory=512Mi",
            "--set",
            "securityContext.runAsUser=1000",
        ],
    )
    .expect("renders");
    let objects = helm::objects(&manifest).expect("parses");
    let container = &controller_pod(&objects)["containers"][0];
    assert_eq!(
        container["resources"],
        json!({"limits": {"memory": "512Mi"}})
    );
    assert_eq!(container["securityContext"], json!({"runAsUser": 1000}));
}

/// A misspelt key is an error naming it, not a value silently ignored.
#[test]
fn values_schema_refuses_unknown_keys() {
    let Some(helm) = helm::helm("values_schema_refuses_unknown_keys") else {
        return;
    };
    for (chart, set, key) in [
        ("kubewarden-controller", "replica=2", "replica"),
        (
            "kubewarden-controller",
            "auditScanner.enabled=false",
            "enabled",
        ),
        (
            "kubewarden-controller",
            "telemetry.custom.endpiont=x",
            "endpiont",
        ),
        ("kubewarden-defaults", "policyServer.replicas=2", "replicas"),
        (
            "kubewarden-defaults",
            "recommendedPolicies.hostPathPolicy.name=x",
            "hostPathPolicy",
        ),
    ] {
        let err = helm::template(&helm, chart, "x", NAMESPACE, &["--set", set]).expect_err(set);
        let err = err.to_string();
        assert!(err.contains("schema") && err.contains(key), "{set}: {err}");
    }
}
