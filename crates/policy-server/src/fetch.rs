//! Fetching policy modules.
//!
//! `file://` URLs (and absolute paths) are read from disk. `https://`, `http://` and
//! `registry://` are recognised but not fetched by this build yet: such policies are reported
//! as failed with that reason, so the rest keep serving.

use std::path::PathBuf;

/// Where a module comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleSource {
    File(PathBuf),
    Http(String),
    Registry(String),
}

impl ModuleSource {
    pub fn parse(url: &str) -> Result<Self, String> {
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
            Some((scheme, _)) => Err(format!("unsupported module scheme {scheme:?} in {url:?}")),
            // Upstream reads a reference without scheme as a registry reference.
            None => Ok(ModuleSource::Registry(url.to_string())),
        }
    }
}

/// Reads the module at `url`.
pub fn fetch(url: &str) -> Result<Vec<u8>, String> {
    match ModuleSource::parse(url)? {
        ModuleSource::File(path) => {
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        }
        ModuleSource::Http(url) => Err(format!(
            "cannot fetch {url}: downloading policies over HTTP(S) is not supported by this policy-server yet; use a file:// module"
        )),
        ModuleSource::Registry(reference) => Err(format!(
            "cannot fetch {reference}: pulling policies from OCI registries is not supported by this policy-server yet; use a file:// module"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        assert_eq!(
            ModuleSource::parse("file:///p.wasm"),
            Ok(ModuleSource::File("/p.wasm".into()))
        );
        assert_eq!(
            ModuleSource::parse("/p.wasm"),
            Ok(ModuleSource::File("/p.wasm".into()))
        );
        assert_eq!(
            ModuleSource::parse("ghcr.io/kubewarden/policies/p:v1"),
            Ok(ModuleSource::Registry(
                "ghcr.io/kubewarden/policies/p:v1".into()
            ))
        );
        assert!(ModuleSource::parse("ftp://x/p.wasm").is_err());
        let err = fetch("registry://ghcr.io/x:v1").expect_err("not yet");
        assert!(err.contains("not supported"), "{err}");
        assert!(
            fetch("file:///does/not/exist.wasm")
                .expect_err("missing")
                .contains("cannot read")
        );
    }
}
