//! The apiserver calls a webhook that runs as a local process, through a real Service and the
//! EndpointSlice of a kwok pod: the path every Kubewarden policy-server takes in these tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::routing::post;
use axum::{Json, Router};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};
use test_cluster::{TestCluster, WebhookCertificates, unique_name, wait_until};

/// Rejects pods whose name starts with "rejected", accepts everything else, and counts calls.
async fn start_webhook(certs: &WebhookCertificates, calls: Arc<AtomicUsize>) -> u16 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let app = Router::new().route(
        "/validate",
        post(move |Json(review): Json<Value>| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let request = &review["request"];
                let name = request["name"].as_str().or_else(|| request["object"]["metadata"]["name"].as_str()).unwrap_or_default();
                let allowed = !name.starts_with("rejected");
                let mut response = json!({"uid": request["uid"], "allowed": allowed});
                if !allowed {
                    response["status"] = json!({"code": 403, "message": "rejected by the throwaway webhook"});
                }
                Json(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}))
            }
        }),
    );
    let config = axum_server::tls_rustls::RustlsConfig::from_pem(
        certs.cert_pem.clone().into_bytes(),
        certs.key_pem.clone().into_bytes(),
    )
    .await
    .expect("TLS config");
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let server = axum_server::from_tcp_rustls(listener, config).expect("server");
    tokio::spawn(async move { server.serve(app.into_make_service()).await });
    port
}

fn pod(name: &str, labels: Value, port: u16) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "example.invalid/c:1", "ports": [{"containerPort": port}]}]}
    }))
    .expect("pod")
}

#[tokio::test]
async fn apiserver_calls_a_local_webhook_through_a_service() {
    let Some(cluster) = TestCluster::connect("local_webhook").await else {
        return;
    };
    let ns = cluster.namespace.clone();
    let service_name = "webhook";
    let app = unique_name("webhook");
    let certs = WebhookCertificates::for_service(service_name, &ns).expect("certificates");
    let calls = Arc::new(AtomicUsize::new(0));
    let port = start_webhook(&certs, calls.clone()).await;

    // A kwok pod stands for the webhook server: kwok gives it an address in the pod range,
    // which the network namespace routes to this process.
    let pods = cluster.namespaced::<Pod>();
    pods.create(
        &PostParams::default(),
        &pod("webhook-server", json!({"app": app}), port),
    )
    .await
    .expect("backing pod");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": service_name},
        "spec": {"selector": {"app": app}, "ports": [{"port": 443, "targetPort": port}]}
    }))
    .expect("service");
    cluster
        .namespaced::<Service>()
        .create(&PostParams::default(), &service)
        .await
        .expect("service");

    let webhook_name = unique_name("local-webhook");
    let configuration: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": webhook_name},
        "webhooks": [{
            "name": "pods.local.test",
            "clientConfig": {
                "service": {"namespace": ns, "name": service_name, "path": "/validate", "port": 443},
                "caBundle": k8s_openapi::ByteString(certs.ca_pem.clone().into_bytes()),
            },
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5
        }]
    }))
    .expect("webhook configuration");
    let configurations = cluster.cluster_wide::<ValidatingWebhookConfiguration>();
    configurations
        .create(&PostParams::default(), &configuration)
        .await
        .expect("registered");

    // The apiserver picks the new configuration up asynchronously (a pod created just after
    // registering may not be sent to the webhook yet), and until the endpoint is published the
    // call fails (failurePolicy Fail): retry until a pod is admitted *by the webhook*.
    let mut attempt = 0;
    wait_until("the webhook admits a pod", Duration::from_secs(60), || {
        attempt += 1;
        let pods = pods.clone();
        let calls = calls.clone();
        let name = format!("allowed-{attempt}");
        async move {
            pods.create(&PostParams::default(), &pod(&name, json!({}), 80))
                .await?;
            Ok(calls.load(Ordering::SeqCst) >= 1)
        }
    })
    .await
    .expect("a pod admitted through the webhook");
    assert!(calls.load(Ordering::SeqCst) >= 1, "the webhook was called");

    let err = pods
        .create(&PostParams::default(), &pod("rejected-pod", json!({}), 80))
        .await
        .expect_err("the webhook rejects it");
    assert!(
        err.to_string()
            .contains("rejected by the throwaway webhook"),
        "{err}"
    );

    let _ = configurations
        .delete(&webhook_name, &DeleteParams::default())
        .await;
    cluster.cleanup().await;
}
