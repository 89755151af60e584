//! `cargo xtask images`: builds (and with `--push` pushes) the controller and policy-server
//! images with the first container engine found (docker, then podman).

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::repo_root;

/// Each image: Dockerfile and repository (under the registry).
const IMAGES: [(&str, &str); 2] = [
    ("Dockerfile.controller", "kubewarden-rs/controller"),
    ("Dockerfile.policy-server", "kubewarden-rs/policy-server"),
];

fn engine() -> Option<&'static str> {
    ["docker", "podman"].into_iter().find(|engine| {
        Command::new(engine)
            .arg("info")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

pub fn run(registry: &str, tag: &str, push: bool) -> Result<()> {
    let Some(engine) = engine() else {
        bail!(
            "no container engine: neither `docker info` nor `podman info` succeeds on this \
             machine, so the images cannot be built here. Build them where Docker or Podman \
             runs (the release workflow does), or directly: \
             docker build -f Dockerfile.controller -t {registry}/kubewarden-rs/controller:{tag} ."
        );
    };
    let root = repo_root();
    for (dockerfile, repository) in IMAGES {
        let image = format!("{registry}/{repository}:{tag}");
        println!("==> {engine} build {image}");
        let status = Command::new(engine)
            .current_dir(&root)
            .args(["build", "-f", dockerfile, "-t", &image, "."])
            .status()
            .with_context(|| format!("running {engine} build"))?;
        if !status.success() {
            bail!("building {image} failed ({status})");
        }
        if push {
            let status = Command::new(engine).args(["push", &image]).status()?;
            if !status.success() {
                bail!("pushing {image} failed ({status})");
            }
        }
    }
    Ok(())
}
