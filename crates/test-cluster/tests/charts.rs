//! The Helm charts, rendered with `helm template` and checked two ways: the facts users rely
//! on (host network, affinity fallbacks, ports, policy modes) asserted one by one, and the whole
//! output compared with a golden file in `charts/tests/golden/` (regenerate after an intended
//! change with `UPDATE_GOLDEN=1 cargo test -p test-cluster --test charts`).

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
        ],
    )
    .expect_err("sidecar telemetry and host network are incompatible");
    assert!(refused.to_string().contains("incompatible"), "{refused}");
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
    assert_eq!(spec["image"], "ghcr.io/kubewarden-rs/policy-server:0.1.0");
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
