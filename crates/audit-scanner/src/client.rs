//! Sends one resource to one policy's `/audit/<unique name>` endpoint and reads the verdict.

use std::path::PathBuf;
use std::time::Duration;

use api_types::error_text::with_causes;
use api_types::naming;
use serde_json::{Value, json};

use crate::report::Verdict;

/// Time allowed for one evaluation, as upstream.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS settings for talking to policy-servers.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM CA files trusted in addition to the system roots (the kubewarden CA).
    pub extra_ca: Vec<PathBuf>,
    /// Client certificate and key for policy-servers that require mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Accept any server certificate (testing only).
    pub insecure: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Tls {
        what: String,
        source: reqwest::Error,
    },
    #[error("--client-cert and --client-key must be given together")]
    IncompleteClientIdentity,
}

/// Where policy-servers are and how to reach them.
#[derive(Debug, Clone)]
pub struct PolicyServerClient {
    http: reqwest::Client,
    kubewarden_namespace: String,
    /// Replaces `https://policy-server-<ps>.<ns>.svc` for every policy (development).
    url_override: Option<String>,
}

fn read(path: &PathBuf) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read {
        path: path.clone(),
        source,
    })
}

/// The request a policy sees for an existing resource: a CREATE of it, by the scanner.
pub fn audit_review(
    uid: &str,
    group: &str,
    version: &str,
    kind: &str,
    resource: &str,
    object: &Value,
) -> Value {
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": resource});
    let metadata = &object["metadata"];
    let mut request = json!({
        "uid": uid,
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": metadata["name"],
        "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:kubewarden:audit-scanner"},
        "object": object,
        "dryRun": true,
    });
    if let Some(namespace) = metadata.get("namespace") {
        request["namespace"] = namespace.clone();
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

/// Reads a policy-server answer: allowed ⇒ pass; refused with code 500 (evaluation error,
/// timeout) ⇒ error; refused otherwise ⇒ fail with the policy's message.
pub fn verdict_from_response(body: &Value) -> Verdict {
    let Some(response) = body.get("response") else {
        return Verdict::Error("the policy-server answered without a response".to_string());
    };
    if response.get("allowed").and_then(Value::as_bool) == Some(true) {
        return Verdict::Pass;
    }
    let status = response.get("status");
    let message = status
        .and_then(|s| s.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("rejected")
        .to_string();
    match status.and_then(|s| s.get("code")).and_then(Value::as_i64) {
        Some(500) => Verdict::Error(message),
        _ => Verdict::Fail(message),
    }
}

impl PolicyServerClient {
    pub fn new(
        tls: &TlsOptions,
        kubewarden_namespace: &str,
        url_override: Option<String>,
    ) -> Result<Self, ClientError> {
        // Installing fails only when a provider is already installed, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            // Keep-alive, unlike upstream: a TLS handshake per evaluation made the scan several
            // times slower (`cargo xtask bench audit`). Requests still spread over the replicas:
            // many connections are open at once and idle ones are dropped after a while.
            .pool_idle_timeout(Duration::from_secs(30))
            .tls_danger_accept_invalid_certs(tls.insecure);
        for path in &tls.extra_ca {
            for certificate in
                reqwest::Certificate::from_pem_bundle(&read(path)?).map_err(|source| {
                    ClientError::Tls {
                        what: format!("CA bundle {}", path.display()),
                        source,
                    }
                })?
            {
                builder = builder.add_root_certificate(certificate);
            }
        }
        match (&tls.client_cert, &tls.client_key) {
            (Some(cert), Some(key)) => {
                let mut pem = read(cert)?;
                pem.push(b'\n');
                pem.extend(read(key)?);
                let identity =
                    reqwest::Identity::from_pem(&pem).map_err(|source| ClientError::Tls {
                        what: format!("client certificate {}", cert.display()),
                        source,
                    })?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => return Err(ClientError::IncompleteClientIdentity),
        }
        let http = builder.build().map_err(|source| ClientError::Tls {
            what: "HTTP client".to_string(),
            source,
        })?;
        Ok(PolicyServerClient {
            http,
            kubewarden_namespace: kubewarden_namespace.to_string(),
            url_override: url_override.map(|u| u.trim_end_matches('/').to_string()),
        })
    }

    /// URL of a policy's audit endpoint on its PolicyServer's Service.
    pub fn audit_url(&self, policy_server: &str, unique_name: &str) -> String {
        let base = match &self.url_override {
            Some(url) => url.clone(),
            None => format!(
                "https://{}.{}.svc",
                naming::policy_server_resource_name(policy_server),
                self.kubewarden_namespace
            ),
        };
        format!("{base}{}", naming::audit_path(unique_name))
    }

    /// Evaluates `review` with one policy. Every failure becomes [`Verdict::Error`] with the
    /// reason: the scan goes on.
    pub async fn evaluate(
        &self,
        policy_server: &str,
        unique_name: &str,
        review: &Value,
    ) -> Verdict {
        let url = self.audit_url(policy_server, unique_name);
        let response = match self.http.post(&url).json(review).send().await {
            Ok(response) => response,
            Err(err) => return Verdict::Error(format!("calling {url}: {}", with_causes(&err))),
        };
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Verdict::Error(format!("{url} answered {status}: {}", body.trim()));
        }
        match response.json::<Value>().await {
            Ok(body) => verdict_from_response(&body),
            Err(err) => Verdict::Error(format!("reading the answer of {url}: {err}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn review_is_a_create_of_the_object() {
        let object = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n", "uid": "u"}});
        let review = audit_review("u", "", "v1", "Pod", "pods", &object);
        let request = &review["request"];
        assert_eq!(request["operation"], "CREATE");
        assert_eq!(request["uid"], "u");
        assert_eq!(request["namespace"], "n");
        assert_eq!(request["name"], "p");
        assert_eq!(
            request["kind"],
            json!({"group": "", "version": "v1", "kind": "Pod"})
        );
        assert_eq!(request["resource"]["resource"], "pods");
        assert_eq!(request["object"], object);
    }

    #[test]
    fn verdicts() {
        assert_eq!(
            verdict_from_response(&json!({"response": {"allowed": true}})),
            Verdict::Pass
        );
        assert_eq!(
            verdict_from_response(
                &json!({"response": {"allowed": false, "status": {"message": "no", "code": 400}}})
            ),
            Verdict::Fail("no".into())
        );
        assert_eq!(
            verdict_from_response(
                &json!({"response": {"allowed": false, "status": {"message": "timeout", "code": 500}}})
            ),
            Verdict::Error("timeout".into())
        );
        assert!(matches!(
            verdict_from_response(&json!({})),
            Verdict::Error(_)
        ));
    }

    #[test]
    fn urls() {
        let client =
            PolicyServerClient::new(&TlsOptions::default(), "kubewarden", None).expect("client");
        assert_eq!(
            client.audit_url("default", "clusterwide-p"),
            "https://policy-server-default.kubewarden.svc/audit/clusterwide-p"
        );
        let client = PolicyServerClient::new(
            &TlsOptions::default(),
            "kubewarden",
            Some("https://127.0.0.1:3000/".into()),
        )
        .expect("client");
        assert_eq!(
            client.audit_url("default", "x"),
            "https://127.0.0.1:3000/audit/x"
        );
    }
}
