//! `kwctl save` and `kwctl load`: stored policies to and from a gzipped tarball, for clusters
//! without registry access. Entries are named by their path in the store
//! (`registry/ghcr.io/.../policy:v1`), as upstream's kwctl names them, so either tool loads
//! the other's tarballs.

use std::fs::File;
use std::path::{Component, Path};

use anyhow::{Context, Result, bail};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

use crate::store::Store;

/// Writes the stored `policies` (URIs or SHA-256 prefixes) into `output`.
pub fn save(store: &Store, policies: &[String], output: &Path) -> Result<()> {
    let file =
        File::create(output).with_context(|| format!("cannot create file {}", output.display()))?;
    let mut tar = tar::Builder::new(GzEncoder::new(file, Compression::default()));
    for policy in policies {
        let (uri, path) = store.resolve(policy)?;
        let Some(entry) = store.relative(&path) else {
            bail!(
                "{uri} is not in the store: kwctl save only saves stored policies (kwctl pull it first)"
            );
        };
        tar.append_path_with_name(&path, &entry)
            .with_context(|| format!("cannot append policy {uri} to the tarball"))?;
    }
    tar.into_inner()
        .and_then(GzEncoder::finish)
        .with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}

/// Puts every policy of the tarball `input` into the store; refuses entries that would land
/// outside it.
pub fn load(store: &Store, input: &Path) -> Result<usize> {
    let file = File::open(input).with_context(|| format!("cannot open {}", input.display()))?;
    let mut archive = tar::Archive::new(GzDecoder::new(file));
    let mut loaded = 0;
    for entry in archive
        .entries()
        .with_context(|| format!("{} is not a gzipped tarball", input.display()))?
    {
        let mut entry = entry.with_context(|| format!("reading {}", input.display()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path()?.into_owned();
        if name
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            bail!(
                "{}: the entry {} leaves the store",
                input.display(),
                name.display()
            );
        }
        let destination = store.root().join(&name);
        if let Some(parent) = destination.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        entry
            .unpack(&destination)
            .with_context(|| format!("writing {}", destination.display()))?;
        loaded += 1;
    }
    Ok(loaded)
}
