//! Where policies are found: local files, and the policy store laid out as upstream's kwctl
//! lays it out (`~/.cache/kubewarden/store/<scheme>/<host[:port]>/<path>`), so a store that
//! upstream's kwctl filled is read here as it is.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// Schemes whose modules live in the store.
const STORED_SCHEMES: [&str; 3] = ["registry", "https", "http"];

/// The policy store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// The user's cache directory: `$XDG_CACHE_HOME`, else `~/.cache`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("neither XDG_CACHE_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache"))
}

/// A registry URI with a tag (`:latest` when it has neither a tag nor a digest), other URIs
/// as they are.
pub fn normalize(uri: &str) -> String {
    let Some(reference) = uri.strip_prefix("registry://") else {
        return uri.to_string();
    };
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if last.contains(':') || last.contains('@') {
        uri.to_string()
    } else {
        format!("{uri}:latest")
    }
}

impl Store {
    pub fn new(root: PathBuf) -> Self {
        Store { root }
    }

    /// `~/.cache/kubewarden/store`, upstream's location.
    pub fn default_location() -> Result<Self> {
        Ok(Store::new(cache_dir()?.join("kubewarden").join("store")))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `path` relative to the store's root, when it is inside the store.
    pub fn relative(&self, path: &Path) -> Option<PathBuf> {
        path.strip_prefix(&self.root).ok().map(Path::to_path_buf)
    }

    /// Where the module of `uri` (`registry://`, `https://`, `http://`) is kept.
    pub fn path_of(&self, uri: &str) -> Result<PathBuf> {
        let uri = normalize(uri);
        let (scheme, rest) = uri
            .split_once("://")
            .with_context(|| format!("{uri} is not a URI"))?;
        if !STORED_SCHEMES.contains(&scheme) {
            bail!("Unknown scheme: {scheme}");
        }
        let mut path = self.root.join(scheme);
        for part in rest.split('/').filter(|p| !p.is_empty()) {
            if part == ".." {
                bail!("{uri}: a path element is `..`");
            }
            path.push(part);
        }
        Ok(path)
    }

    /// Every stored policy: its URI and file, sorted by URI.
    pub fn list(&self) -> Vec<(String, PathBuf)> {
        let mut found = Vec::new();
        for scheme in STORED_SCHEMES {
            let base = self.root.join(scheme);
            let mut pending = vec![base.clone()];
            while let Some(dir) = pending.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.is_dir() {
                        pending.push(path);
                    } else if let Ok(relative) = path.strip_prefix(&base) {
                        let rest: Vec<String> = relative
                            .components()
                            .map(|c| c.as_os_str().to_string_lossy().into_owned())
                            .collect();
                        found.push((format!("{scheme}://{}", rest.join("/")), path));
                    }
                }
            }
        }
        found.sort();
        found
    }

    /// What the user named, as a URI and the module's file: a URI (`file://` anywhere, the
    /// others from the store), a local path, or the start of a stored module's SHA-256.
    pub fn resolve(&self, name: &str) -> Result<(String, PathBuf)> {
        if let Some((scheme, rest)) = name.split_once("://") {
            if scheme == "file" {
                return Ok((name.to_string(), PathBuf::from(rest)));
            }
            let uri = normalize(name);
            let path = self.path_of(&uri)?;
            if !path.is_file() {
                bail!("Cannot find policy with uri: {uri}");
            }
            return Ok((uri, path));
        }
        let local = Path::new(name);
        if local.is_file() {
            let absolute = std::fs::canonicalize(local)
                .with_context(|| format!("resolving {}", local.display()))?;
            return Ok((format!("file://{}", absolute.display()), absolute));
        }
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_hexdigit()) {
            for (uri, path) in self.list() {
                if sha256_hex(&path).is_ok_and(|digest| digest.starts_with(name)) {
                    return Ok((uri, path));
                }
            }
        }
        bail!("Cannot find policy with uri: {name}")
    }
}

/// Hex SHA-256 of a file.
pub fn sha256_hex(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_map_to_upstream_store_paths() {
        let store = Store::new(PathBuf::from("/s"));
        assert_eq!(
            store
                .path_of("registry://ghcr.io/kubewarden/policies/pod-privileged:v0.2.2")
                .expect("path"),
            PathBuf::from("/s/registry/ghcr.io/kubewarden/policies/pod-privileged:v0.2.2")
        );
        assert_eq!(
            store.path_of("registry://host:5000/p").expect("path"),
            PathBuf::from("/s/registry/host:5000/p:latest")
        );
        assert_eq!(
            store
                .path_of("https://github.com/o/r/releases/download/v1/policy.wasm")
                .expect("path"),
            PathBuf::from("/s/https/github.com/o/r/releases/download/v1/policy.wasm")
        );
        assert!(store.path_of("ftp://x/y").is_err());
        assert!(store.path_of("https://x/../../etc/passwd").is_err());
        assert_eq!(
            normalize("registry://r/p@sha256:abc"),
            "registry://r/p@sha256:abc"
        );
    }

    #[test]
    fn stored_policies_are_listed_and_found_by_sha_prefix() {
        let root = std::env::temp_dir().join(format!("kwctl-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let store = Store::new(root.clone());
        let path = store.path_of("registry://r.io/p:v1").expect("path");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
        std::fs::write(&path, b"\0asm\x01\0\0\0").expect("module");
        assert_eq!(
            store.list(),
            vec![("registry://r.io/p:v1".to_string(), path.clone())]
        );
        let digest = sha256_hex(&path).expect("digest");
        assert_eq!(
            store.resolve(&digest[..12]).expect("found"),
            ("registry://r.io/p:v1".to_string(), path.clone())
        );
        assert_eq!(
            store.resolve("registry://r.io/p:v1").expect("found").1,
            path
        );
        let missing = store.resolve("registry://r.io/other").expect_err("absent");
        assert_eq!(
            missing.to_string(),
            "Cannot find policy with uri: registry://r.io/other:latest"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
