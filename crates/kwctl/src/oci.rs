//! `kwctl pull`, `kwctl push` and `kwctl rm`: modules between registries (or web servers)
//! and the store, with the policy-server's own fetcher (sources.yml, Docker credentials), and
//! pushed as upstream's kwctl pushes them (one `application/vnd.wasm.content.layer.v1+wasm`
//! layer, an `application/vnd.wasm.config.v1+json` config), so upstream's tools and
//! policy-servers pull them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use api_types::config::SourcesConfig;
use api_types::error_text::with_causes;
use oci_client::Reference;
use oci_client::client::{Config, ImageLayer};
use oci_client::manifest::{WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE};
use policy_evaluator::metadata::Metadata;
use policy_server::fetch::{DockerCredentials, Fetcher};

use crate::store::{Store, normalize};

/// How registries are reached.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// `sources.yml` (insecure sources, source authorities); else the config directory's
    /// `sources.yaml` when it exists, as upstream.
    pub sources_path: Option<PathBuf>,
    /// A directory holding a Docker `config.json`; else `$DOCKER_CONFIG`, else `~/.docker`.
    pub docker_config_dir: Option<PathBuf>,
}

impl Access {
    pub fn fetcher(&self, config_dir: &Path, download_dir: PathBuf) -> Result<Fetcher> {
        let default_sources = config_dir.join("sources.yaml");
        let sources_path = self
            .sources_path
            .clone()
            .or_else(|| default_sources.is_file().then_some(default_sources));
        let sources = match sources_path {
            Some(path) => SourcesConfig::parse(
                &std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?,
            )?,
            None => SourcesConfig::default(),
        };
        let docker_dir = self
            .docker_config_dir
            .clone()
            .or_else(|| std::env::var_os("DOCKER_CONFIG").map(PathBuf::from))
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker")));
        let credentials = match docker_dir {
            Some(dir) if dir.join("config.json").is_file() => DockerCredentials::read(&dir)?,
            _ => DockerCredentials::default(),
        };
        Ok(Fetcher {
            sources,
            credentials,
            download_dir,
        })
    }
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A URI as the store keys it: a bare reference is a registry one.
pub fn policy_uri(uri: &str) -> String {
    if uri.contains("://") {
        normalize(uri)
    } else {
        normalize(&format!("registry://{uri}"))
    }
}

/// Downloads `uri` into the store (or to `output`), at `verified_digest` when its signatures
/// were verified; the file written.
pub fn pull(
    store: &Store,
    access: &Access,
    config_dir: &Path,
    uri: &str,
    output: Option<&Path>,
    verified_digest: Option<&str>,
) -> Result<PathBuf> {
    let uri = policy_uri(uri);
    let destination = match output {
        Some(path) => path.to_path_buf(),
        None => store.path_of(&uri)?,
    };
    let scratch = std::env::temp_dir().join(format!("kwctl-pull-{}", std::process::id()));
    let fetcher = access.fetcher(config_dir, scratch.clone())?;
    let fetched = match verified_digest {
        Some(digest) => runtime()?.block_on(fetcher.fetch_at_digest(&uri, digest)),
        None => runtime()?.block_on(fetcher.fetch(&uri)),
    };
    let wasm = fetched.map_err(|e| {
        anyhow::anyhow!(
            "the policy {uri} could not be downloaded due to error: {}",
            with_causes(&e)
        )
    })?;
    let _ = std::fs::remove_dir_all(&scratch);
    if !wasm.starts_with(b"\0asm") {
        bail!("invalid wasm file: {uri} is not a WebAssembly module");
    }
    if let Some(parent) = destination.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&destination, wasm)
        .with_context(|| format!("writing {}", destination.display()))?;
    Ok(destination)
}

/// Pushes the module at `module` to the registry reference `destination`; the immutable
/// reference (`registry://<repository>@<digest>`). A module without metadata is refused
/// unless `force`.
pub fn push(
    access: &Access,
    config_dir: &Path,
    module: &Path,
    destination: &str,
    force: bool,
) -> Result<String> {
    let wasm = std::fs::read(module).with_context(|| format!("reading {}", module.display()))?;
    let metadata = Metadata::from_module(&wasm)
        .with_context(|| format!("reading the metadata of {}", module.display()))?;
    match metadata {
        None if !force => bail!(
            "{} has no Kubewarden metadata: annotate it (kwctl annotate), or push it anyway with --force",
            module.display()
        ),
        Some(metadata) if !force => metadata
            .validate()
            .with_context(|| format!("{} cannot be validated", module.display()))?,
        _ => {}
    }
    let reference_text = destination
        .strip_prefix("registry://")
        .unwrap_or(destination);
    let reference: Reference = reference_text
        .parse()
        .with_context(|| format!("{destination} is not an OCI reference"))?;
    let fetcher = access.fetcher(config_dir, std::env::temp_dir())?;
    let (client, auth) = fetcher.registry_client(&reference)?;
    let layers = vec![ImageLayer::new(
        wasm,
        WASM_LAYER_MEDIA_TYPE.to_string(),
        None,
    )];
    let config = Config::new(b"{}".to_vec(), WASM_CONFIG_MEDIA_TYPE.to_string(), None);
    let digest = runtime()?.block_on(async {
        client
            .push(&reference, &layers, config, &auth, None)
            .await
            .with_context(|| format!("pushing to {destination}"))?;
        client
            .fetch_manifest_digest(&reference, &auth)
            .await
            .with_context(|| format!("reading the digest of {destination}"))
    })?;
    Ok(format!(
        "registry://{}/{}@{digest}",
        reference.registry(),
        reference.repository()
    ))
}

/// Removes a stored policy (by URI or SHA-256 prefix).
pub fn rm(store: &Store, name: &str) -> Result<String> {
    let (uri, path) = store.resolve(name)?;
    if uri.starts_with("file://") {
        bail!("{uri} is not in the store: kwctl rm only removes stored policies");
    }
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    Ok(uri)
}

/// The cosign signature manifest of the registry policy `uri` (the `sha256-<digest>.sig` tag
/// next to it); `None` when the policy has no signatures.
pub fn signatures(
    access: &Access,
    config_dir: &Path,
    uri: &str,
) -> Result<Option<oci_client::manifest::OciImageManifest>> {
    let Some(reference_text) = uri.strip_prefix("registry://") else {
        bail!("only registry:// policies carry signatures, not {uri}");
    };
    let reference: Reference = reference_text
        .parse()
        .with_context(|| format!("{uri} is not an OCI reference"))?;
    let fetcher = access.fetcher(config_dir, std::env::temp_dir())?;
    let (client, auth) = fetcher.registry_client(&reference)?;
    runtime()?.block_on(async {
        let digest = client
            .fetch_manifest_digest(&reference, &auth)
            .await
            .with_context(|| format!("reading the manifest of {uri}"))?;
        let signatures: Reference = format!(
            "{}/{}:{}.sig",
            reference.registry(),
            reference.repository(),
            digest.replace(':', "-")
        )
        .parse()
        .context("the signature reference")?;
        match client.pull_image_manifest(&signatures, &auth).await {
            Ok((manifest, _)) => Ok(Some(manifest)),
            Err(oci_client::errors::OciDistributionError::ImageManifestNotFoundError(_)) => {
                Ok(None)
            }
            Err(oci_client::errors::OciDistributionError::RegistryError { envelope, .. })
                if envelope
                    .errors
                    .iter()
                    .any(|e| e.code == oci_client::errors::OciErrorCode::ManifestUnknown) =>
            {
                Ok(None)
            }
            Err(error) => Err(anyhow::Error::new(error).context(format!(
                "Cannot determine if the policy has been signed: fetching its signatures from {}",
                reference.registry()
            ))),
        }
    })
}
