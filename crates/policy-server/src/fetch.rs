//! Fetching policy modules: `file://` from disk, `https://` (and `http://` from insecure
//! sources) with reqwest, `registry://` (or a bare reference) from OCI registries with
//! oci-client. Each distinct URL is fetched once; what is downloaded is also written to the
//! download directory for inspection.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api_types::config::{SourceAuthority, SourcesConfig};
use api_types::error_text::with_causes;
use base64::Engine as _;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};

/// Layer media types a policy module is published with (Kubewarden, and the older wasm-to-oci).
const WASM_MEDIA_TYPES: &[&str] = &[
    oci_client::manifest::WASM_LAYER_MEDIA_TYPE,
    "application/vnd.module.wasm.content.layer.v1+wasm",
];
/// Largest module accepted over HTTP(S).
const MAX_MODULE_BYTES: usize = 256 * 1024 * 1024;
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// A module (or a registry answer) could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("unsupported module scheme {scheme:?} in {url:?}")]
    UnsupportedScheme { scheme: String, url: String },
    #[error("cannot read {}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot fetch {url}: plain HTTP is only allowed from insecure_sources; add {host} to sources.yml or use https"
    )]
    PlainHttp { url: String, host: String },
    #[error("reading the certificate authority {path} for {host}")]
    ReadAuthority {
        path: String,
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate authority for {host}")]
    InvalidAuthority {
        host: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("HTTP client for {host}")]
    HttpClient {
        host: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot fetch {url}")]
    Download {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot fetch {url}: the server answered {status}")]
    HttpStatus {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("cannot fetch {url}: larger than {MAX_MODULE_BYTES} bytes")]
    TooLarge { url: String },
    #[error("cannot fetch {url}: the download broke off")]
    BrokenOff {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} is not in an OCI registry")]
    NotInRegistry { url: String },
    #[error("{reference:?} is not an OCI reference")]
    InvalidReference {
        reference: String,
        #[source]
        source: oci_client::ParseError,
    },
    #[error("cannot pull {reference}: no answer from {registry} within {DOWNLOAD_TIMEOUT:?}")]
    PullTimeout { reference: String, registry: String },
    #[error("cannot pull {reference}")]
    Pull {
        reference: String,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    #[error("cannot pull {reference}: the image has no WebAssembly layer")]
    NoWasmLayer { reference: String },
    #[error(
        "cannot pull {reference}: the module's digest is {actual}, the manifest says {expected}"
    )]
    DigestMismatch {
        reference: String,
        actual: String,
        expected: String,
    },
}

/// A Docker `config.json` or a credential helper could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: auth of {registry} is not base64", path.display())]
    AuthNotBase64 {
        path: PathBuf,
        registry: String,
        #[source]
        source: base64::DecodeError,
    },
    #[error("{}: auth of {registry} is not user:password", path.display())]
    AuthNotUserPassword { path: PathBuf, registry: String },
    #[error("{0:?} is not a credential helper name")]
    HelperName(String),
    #[error("writing to {}", program.display())]
    HelperWrite {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("running {}", program.display())]
    HelperRun {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} gave no answer within {HELPER_TIMEOUT:?}", program.display())]
    HelperTimeout { program: PathBuf },
    #[error("{} exited with {status}: {said}", program.display())]
    HelperFailed {
        program: PathBuf,
        status: std::process::ExitStatus,
        said: String,
    },
    #[error("{} answered no JSON", program.display())]
    HelperAnswerNotJson {
        program: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} answered without Username and Secret", program.display())]
    HelperAnswerIncomplete { program: PathBuf },
}

/// Where a module comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleSource {
    File(PathBuf),
    Http(String),
    Registry(String),
}

impl ModuleSource {
    pub fn parse(url: &str) -> Result<Self, FetchError> {
        if let Some(path) = url.strip_prefix("file://") {
            return Ok(ModuleSource::File(PathBuf::from(path)));
        }
        if url.starts_with("https://") || url.starts_with("http://") {
            return Ok(ModuleSource::Http(url.to_string()));
        }
        if let Some(reference) = url.strip_prefix("registry://") {
            return Ok(ModuleSource::Registry(reference.to_string()));
        }
        if url.starts_with('/') {
            return Ok(ModuleSource::File(PathBuf::from(url)));
        }
        match url.split_once("://") {
            Some((scheme, _)) => Err(FetchError::UnsupportedScheme {
                scheme: scheme.to_string(),
                url: url.to_string(),
            }),
            // Upstream reads a reference without scheme as a registry reference.
            None => Ok(ModuleSource::Registry(url.to_string())),
        }
    }
}

/// `host[:port]` of an http(s) URL.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}

/// Credentials from a Docker `config.json`: `auths` entries by registry host, and the
/// credential helpers it names (`credHelpers` per registry, `credsStore` for the rest), which
/// are asked as Docker asks them: `docker-credential-<name> get` with the server on stdin.
#[derive(Default, Clone)]
pub struct DockerCredentials {
    auths: HashMap<String, (String, String)>,
    helpers: HashMap<String, String>,
    store: Option<String>,
    /// Where helpers are looked for; `None`: `PATH`, as Docker does.
    helper_dir: Option<PathBuf>,
    /// Helper answers by server, for [`HELPER_ANSWER_TTL`]: registry host capabilities ask on
    /// every request.
    helper_answers: Arc<Mutex<HelperAnswers>>,
}

/// Credential helper answers (user and secret, or none) by helper and server, with when they
/// came.
type HelperAnswers = HashMap<String, (Instant, Option<(String, String)>)>;

/// How long a credential helper's answer is reused.
const HELPER_ANSWER_TTL: Duration = Duration::from_secs(60);
/// How long a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

impl std::fmt::Debug for DockerCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Registries and helpers only, never a password.
        let mut registries: Vec<&String> = self.auths.keys().collect();
        registries.sort();
        f.debug_struct("DockerCredentials")
            .field("auths", &registries)
            .field("helpers", &self.helpers)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl DockerCredentials {
    /// Reads `<dir>/config.json` (the layout of `DOCKER_CONFIG`).
    pub fn read(dir: &Path) -> Result<Self, CredentialsError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|source| CredentialsError::Read {
            path: path.clone(),
            source,
        })?;
        let config: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| CredentialsError::Parse {
                path: path.clone(),
                source,
            })?;
        let mut auths = HashMap::new();
        for (registry, entry) in config["auths"].as_object().into_iter().flatten() {
            let pair = if let Some(auth) = entry["auth"].as_str() {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth)
                    .map_err(|source| CredentialsError::AuthNotBase64 {
                        path: path.clone(),
                        registry: registry.clone(),
                        source,
                    })?;
                let decoded = String::from_utf8_lossy(&decoded).into_owned();
                let (user, password) = decoded.split_once(':').ok_or_else(|| {
                    CredentialsError::AuthNotUserPassword {
                        path: path.clone(),
                        registry: registry.clone(),
                    }
                })?;
                (user.to_string(), password.to_string())
            } else if let (Some(user), Some(password)) =
                (entry["username"].as_str(), entry["password"].as_str())
            {
                (user.to_string(), password.to_string())
            } else {
                continue;
            };
            auths.insert(url_host(registry).to_string(), pair);
        }
        let helpers = config["credHelpers"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(registry, helper)| {
                Some((url_host(registry).to_string(), helper.as_str()?.to_string()))
            })
            .collect();
        let store = config["credsStore"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        Ok(DockerCredentials {
            auths,
            helpers,
            store,
            helper_dir: None,
            helper_answers: Arc::default(),
        })
    }

    fn auth_for(&self, registry: &str) -> RegistryAuth {
        let key = if registry == "docker.io" {
            "index.docker.io"
        } else {
            registry
        };
        let helper = self
            .helpers
            .get(key)
            .or_else(|| self.helpers.get(registry))
            .or(self.store.as_ref());
        if let Some(helper) = helper {
            // Docker keeps Docker Hub's credentials under its v1 URL.
            let server = if key == "index.docker.io" {
                "https://index.docker.io/v1/"
            } else {
                key
            };
            match self.cached_helper_answer(helper, server) {
                Ok(Some((user, secret))) => return RegistryAuth::Basic(user, secret),
                Ok(None) => {}
                Err(error) => {
                    let reason = with_causes(&error);
                    tracing::warn!(registry, helper, %reason, "credential helper failed; trying without it")
                }
            }
        }
        match self.auths.get(key).or_else(|| self.auths.get(registry)) {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    fn cached_helper_answer(
        &self,
        helper: &str,
        server: &str,
    ) -> Result<Option<(String, String)>, CredentialsError> {
        let key = format!("{helper}\n{server}");
        let cached = self
            .lock_helper_answers()
            .get(&key)
            .filter(|(at, _)| at.elapsed() < HELPER_ANSWER_TTL)
            .map(|(_, answer)| answer.clone());
        if let Some(answer) = cached {
            return Ok(answer);
        }
        let answer = self.ask_helper(helper, server)?;
        self.lock_helper_answers()
            .insert(key, (Instant::now(), answer.clone()));
        Ok(answer)
    }

    fn lock_helper_answers(&self) -> std::sync::MutexGuard<'_, HelperAnswers> {
        // A poisoned map only holds answers that expire anyway.
        self.helper_answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `docker-credential-<helper> get`: `Ok(None)` when it has nothing for `server`.
    fn ask_helper(
        &self,
        helper: &str,
        server: &str,
    ) -> Result<Option<(String, String)>, CredentialsError> {
        use std::io::Write;
        if helper.contains('/') || helper.is_empty() {
            return Err(CredentialsError::HelperName(helper.to_string()));
        }
        let program = format!("docker-credential-{helper}");
        let program = match &self.helper_dir {
            Some(dir) => dir.join(&program),
            None => PathBuf::from(&program),
        };
        let mut child = std::process::Command::new(&program)
            .arg("get")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|source| CredentialsError::HelperRun {
                program: program.clone(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(server.as_bytes())
                .map_err(|source| CredentialsError::HelperWrite {
                    program: program.clone(),
                    source,
                })?;
        }
        // Its answer is a few hundred bytes: the pipes hold it while it is waited for.
        let started = Instant::now();
        while child
            .try_wait()
            .map_err(|source| CredentialsError::HelperRun {
                program: program.clone(),
                source,
            })?
            .is_none()
        {
            if started.elapsed() > HELPER_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CredentialsError::HelperTimeout { program });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let output = child
            .wait_with_output()
            .map_err(|source| CredentialsError::HelperRun {
                program: program.clone(),
                source,
            })?;
        if !output.status.success() {
            let said = String::from_utf8_lossy(&output.stdout);
            let said = said.trim();
            // The helper protocol's answer for an unknown server.
            if said.contains("credentials not found") {
                return Ok(None);
            }
            return Err(CredentialsError::HelperFailed {
                program,
                status: output.status,
                said: format!("{said} {}", String::from_utf8_lossy(&output.stderr).trim()),
            });
        }
        let answer: serde_json::Value =
            serde_json::from_slice(&output.stdout).map_err(|source| {
                CredentialsError::HelperAnswerNotJson {
                    program: program.clone(),
                    source,
                }
            })?;
        match (answer["Username"].as_str(), answer["Secret"].as_str()) {
            (Some(user), Some(secret)) => Ok(Some((user.to_string(), secret.to_string()))),
            _ => Err(CredentialsError::HelperAnswerIncomplete { program }),
        }
    }
}

/// What a registry client needs to reach one registry.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// Registries reached over plain HTTP (all insecure sources).
    pub insecure_sources: Vec<String>,
    /// The registry is an insecure source: its certificate is not checked.
    pub accept_invalid_certificates: bool,
    /// PEM certificate authorities trusted for the registry besides the system roots.
    pub extra_root_pems: Vec<Vec<u8>>,
    pub auth: RegistryAuth,
}

/// Fetches modules according to sources.yml and registry credentials.
#[derive(Debug, Clone)]
pub struct Fetcher {
    pub sources: SourcesConfig,
    pub credentials: DockerCredentials,
    pub download_dir: PathBuf,
}

impl Fetcher {
    fn is_insecure(&self, host: &str) -> bool {
        self.sources.insecure_sources.iter().any(|s| s == host)
    }

    /// PEM certificates trusted for `host`, in addition to the system roots.
    fn authorities(&self, host: &str) -> Result<Vec<Vec<u8>>, FetchError> {
        let mut pems = Vec::new();
        for authority in self
            .sources
            .source_authorities
            .get(host)
            .into_iter()
            .flatten()
        {
            pems.push(match authority {
                SourceAuthority::Data { data } => data.clone().into_bytes(),
                SourceAuthority::Path { path } => {
                    std::fs::read(path).map_err(|source| FetchError::ReadAuthority {
                        path: path.clone(),
                        host: host.to_string(),
                        source,
                    })?
                }
            });
        }
        Ok(pems)
    }

    /// Reads or downloads the module at `url`.
    pub async fn fetch(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let bytes = match ModuleSource::parse(url)? {
            ModuleSource::File(path) => {
                return tokio::fs::read(&path)
                    .await
                    .map_err(|source| FetchError::ReadFile { path, source });
            }
            ModuleSource::Http(url) => self.download(&url).await?,
            ModuleSource::Registry(reference) => self.pull(&reference).await?,
        };
        self.keep_copy(url, &bytes).await;
        Ok(bytes)
    }

    async fn download(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let host = url_host(url);
        let insecure = self.is_insecure(host);
        if url.starts_with("http://") && !insecure {
            return Err(FetchError::PlainHttp {
                url: url.to_string(),
                host: host.to_string(),
            });
        }
        let mut builder = reqwest::Client::builder()
            .timeout(DOWNLOAD_TIMEOUT)
            .tls_danger_accept_invalid_certs(insecure);
        for pem in self.authorities(host)? {
            let certificate = reqwest::Certificate::from_pem(&pem).map_err(|source| {
                FetchError::InvalidAuthority {
                    host: host.to_string(),
                    source,
                }
            })?;
            builder = builder.add_root_certificate(certificate);
        }
        let client = builder.build().map_err(|source| FetchError::HttpClient {
            host: host.to_string(),
            source,
        })?;
        let url = url.to_string();
        let response = match client.get(&url).send().await {
            Ok(response) => response,
            Err(source) => return Err(FetchError::Download { url, source }),
        };
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::HttpStatus { url, status });
        }
        if response
            .content_length()
            .is_some_and(|len| len as usize > MAX_MODULE_BYTES)
        {
            return Err(FetchError::TooLarge { url });
        }
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(source) => return Err(FetchError::BrokenOff { url, source }),
        };
        if body.len() > MAX_MODULE_BYTES {
            return Err(FetchError::TooLarge { url });
        }
        Ok(body.to_vec())
    }

    /// How to reach `registry` (`host[:port]`): its sources.yml settings and credentials.
    pub fn registry_settings(&self, registry: &str) -> Result<RegistrySettings, FetchError> {
        Ok(RegistrySettings {
            insecure_sources: self.sources.insecure_sources.clone(),
            accept_invalid_certificates: self.is_insecure(registry),
            extra_root_pems: self.authorities(registry)?,
            auth: self.credentials.auth_for(registry),
        })
    }

    /// A registry client for `parsed` (insecure sources, source authorities) and the
    /// credentials to use with it.
    pub fn registry_client(
        &self,
        parsed: &Reference,
    ) -> Result<(Client, RegistryAuth), FetchError> {
        let settings = self.registry_settings(parsed.registry())?;
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(settings.insecure_sources),
            accept_invalid_certificates: settings.accept_invalid_certificates,
            extra_root_certificates: settings
                .extra_root_pems
                .into_iter()
                .map(|data| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data,
                })
                .collect(),
            ..Default::default()
        };
        Ok((Client::new(config), settings.auth))
    }

    /// Pulls the module of the registry `url` at manifest `digest` (one its signatures were
    /// verified for), whatever its tag points to now.
    pub async fn fetch_at_digest(&self, url: &str, digest: &str) -> Result<Vec<u8>, FetchError> {
        let ModuleSource::Registry(reference) = ModuleSource::parse(url)? else {
            return Err(FetchError::NotInRegistry {
                url: url.to_string(),
            });
        };
        let parsed = parse_reference(&reference)?;
        let pinned = parsed.clone_with_digest(digest.to_string());
        let bytes = self.pull(&pinned.whole()).await?;
        self.keep_copy(url, &bytes).await;
        Ok(bytes)
    }

    async fn pull(&self, reference: &str) -> Result<Vec<u8>, FetchError> {
        let parsed = parse_reference(reference)?;
        let registry = parsed.resolve_registry().to_string();
        let (client, auth) = self.registry_client(&parsed)?;
        let image = tokio::time::timeout(
            DOWNLOAD_TIMEOUT,
            client.pull(&parsed, &auth, WASM_MEDIA_TYPES.to_vec()),
        )
        .await
        .map_err(|_| FetchError::PullTimeout {
            reference: reference.to_string(),
            registry,
        })?
        .map_err(|source| FetchError::Pull {
            reference: reference.to_string(),
            source,
        })?;
        let layer = image
            .layers
            .into_iter()
            .find(|l| WASM_MEDIA_TYPES.contains(&l.media_type.as_str()))
            .ok_or_else(|| FetchError::NoWasmLayer {
                reference: reference.to_string(),
            })?;
        let expected = image
            .manifest
            .as_ref()
            .and_then(|m| {
                m.layers
                    .iter()
                    .find(|l| WASM_MEDIA_TYPES.contains(&l.media_type.as_str()))
            })
            .map(|l| l.digest.clone());
        let actual = format!("sha256:{:x}", Sha256::digest(&layer.data));
        if let Some(expected) = expected
            && expected != actual
        {
            return Err(FetchError::DigestMismatch {
                reference: reference.to_string(),
                actual,
                expected,
            });
        }
        Ok(layer.data.to_vec())
    }

    /// Writes what was downloaded under the download directory, by URL.
    async fn keep_copy(&self, url: &str, bytes: &[u8]) {
        let relative: String = url
            .replace("://", "/")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = self
            .download_dir
            .join("modules")
            .join(relative.trim_start_matches('/').replace("..", "_"));
        if let Some(dir) = path.parent()
            && let Err(err) = tokio::fs::create_dir_all(dir).await
        {
            tracing::warn!(error = %err, dir = %dir.display(), "cannot keep a copy of the module");
            return;
        }
        if let Err(err) = tokio::fs::write(&path, bytes).await {
            tracing::warn!(error = %err, path = %path.display(), "cannot keep a copy of the module");
        }
    }
}

/// `reference` parsed as an OCI reference.
pub fn parse_reference(reference: &str) -> Result<Reference, FetchError> {
    reference
        .parse()
        .map_err(|source| FetchError::InvalidReference {
            reference: reference.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        let parse = |url| ModuleSource::parse(url).expect("a source");
        assert_eq!(
            parse("file:///p.wasm"),
            ModuleSource::File("/p.wasm".into())
        );
        assert_eq!(parse("/p.wasm"), ModuleSource::File("/p.wasm".into()));
        assert_eq!(
            parse("ghcr.io/kubewarden/policies/p:v1"),
            ModuleSource::Registry("ghcr.io/kubewarden/policies/p:v1".into())
        );
        assert!(ModuleSource::parse("ftp://x/p.wasm").is_err());
        assert_eq!(
            url_host("https://h.example:8443/a/b.wasm?x"),
            "h.example:8443"
        );
    }

    #[test]
    fn docker_credentials() {
        let dir = std::env::temp_dir().join(format!("docker-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:secret");
        std::fs::write(
            dir.join("config.json"),
            format!(r#"{{"auths": {{"registry.local:5000": {{"auth": "{auth}"}}, "https://index.docker.io/v1/": {{"username": "bob", "password": "pw"}}}}}}"#),
        )
        .expect("write");
        let credentials = DockerCredentials::read(&dir).expect("reads");
        assert!(
            matches!(credentials.auth_for("registry.local:5000"), RegistryAuth::Basic(u, p) if u == "alice" && p == "secret")
        );
        assert!(
            matches!(credentials.auth_for("docker.io"), RegistryAuth::Basic(u, _) if u == "bob")
        );
        assert!(matches!(
            credentials.auth_for("ghcr.io"),
            RegistryAuth::Anonymous
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn docker_credential_helpers() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("docker-helpers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        // A helper speaking Docker's protocol: the server on stdin, JSON or "not found" out.
        let helper = |name: &str, user: &str| {
            let path = dir.join(format!("docker-credential-{name}"));
            std::fs::write(
                &path,
                format!(
                    "#!/bin/sh\nread server\ncase \"$server\" in\n  ghcr.io|registry.local:5000|https://index.docker.io/v1/) echo '{{\"ServerURL\":\"'$server'\",\"Username\":\"{user}\",\"Secret\":\"s-'$server'\"}}' ;;\n  *) echo 'credentials not found in native keychain'; exit 1 ;;\nesac\n"
                ),
            )
            .expect("helper");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        };
        helper("per-registry", "helper-user");
        helper("store", "store-user");
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:secret");
        std::fs::write(
            dir.join("config.json"),
            format!(
                r#"{{"auths": {{"other.local": {{"auth": "{auth}"}}}}, "credHelpers": {{"ghcr.io": "per-registry", "broken.local": "missing"}}, "credsStore": "store"}}"#
            ),
        )
        .expect("config");
        let mut credentials = DockerCredentials::read(&dir).expect("reads");
        credentials.helper_dir = Some(dir.clone());
        assert!(
            matches!(credentials.auth_for("ghcr.io"), RegistryAuth::Basic(u, p) if u == "helper-user" && p == "s-ghcr.io")
        );
        assert!(
            matches!(credentials.auth_for("registry.local:5000"), RegistryAuth::Basic(u, _) if u == "store-user")
        );
        assert!(
            matches!(credentials.auth_for("docker.io"), RegistryAuth::Basic(_, p) if p == "s-https://index.docker.io/v1/")
        );
        // Nothing in the store: the config's own entry; a helper that cannot run: the same.
        assert!(
            matches!(credentials.auth_for("other.local"), RegistryAuth::Basic(u, _) if u == "alice")
        );
        assert!(matches!(
            credentials.auth_for("broken.local"),
            RegistryAuth::Anonymous
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn plain_http_needs_an_insecure_source() {
        let fetcher = Fetcher {
            sources: SourcesConfig::default(),
            credentials: DockerCredentials::default(),
            download_dir: std::env::temp_dir(),
        };
        let err = fetcher
            .fetch("http://127.0.0.1:9/p.wasm")
            .await
            .expect_err("refused")
            .to_string();
        assert!(err.contains("only allowed from insecure_sources"), "{err}");
        let err = fetcher
            .fetch("file:///does/not/exist.wasm")
            .await
            .expect_err("missing")
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
    }
}
