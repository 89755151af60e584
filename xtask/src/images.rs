//! `cargo xtask images`: the controller and policy-server images from the repository's
//! Dockerfiles.
//!
//! With Docker or Podman the Dockerfiles build as they do anywhere (compiled in the Rust builder
//! image, on the distroless runtime image). Without them, buildah builds the same Dockerfiles
//! daemonlessly (`--isolation chroot`, vfs storage under the cache) with `BINARIES=prebuilt`:
//! the binaries come from cargo on the host, because the builder stage needs a Rust image that
//! cannot be pulled here, and the runtime image is an equivalent of distroless
//! `cc-debian12:nonroot` assembled from this machine's Debian packages ([`base_image`]).

mod base_image;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cargo;
use crate::paths::cache_root;
use crate::paths::repo_root;
use crate::progress;

/// An image of the stack: its Dockerfile, repository (under the registry) and the binaries the
/// Dockerfile's `prebuilt` stage copies.
pub struct Image {
    pub dockerfile: &'static str,
    pub repository: &'static str,
    pub binaries: &'static [&'static str],
}

pub const IMAGES: [Image; 2] = [
    Image {
        dockerfile: "Dockerfile.controller",
        repository: "kubewarden-rs/controller",
        binaries: &["controller", "audit-scanner"],
    },
    Image {
        dockerfile: "Dockerfile.policy-server",
        repository: "kubewarden-rs/policy-server",
        binaries: &["policy-server"],
    },
];

/// Which tool builds the images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// Docker, then Podman, then buildah: the first that works here.
    Auto,
    Docker,
    Podman,
    Buildah,
}

fn works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Engine {
    fn resolve(self) -> Result<Engine> {
        let found = match self {
            Engine::Auto => [Engine::Docker, Engine::Podman, Engine::Buildah]
                .into_iter()
                .find(|engine| engine.available()),
            engine => engine.available().then_some(engine),
        };
        found.with_context(|| {
            format!(
                "no container image builder: {} does not work on this machine; install \
                 buildah (Debian: apt-get install buildah), or Docker or Podman",
                match self {
                    Engine::Auto => "none of `docker info`, `podman info`, `buildah version`",
                    Engine::Docker => "`docker info`",
                    Engine::Podman => "`podman info`",
                    Engine::Buildah => "`buildah version`",
                }
            )
        })
    }

    fn available(self) -> bool {
        match self {
            Engine::Auto => false,
            Engine::Docker => works("docker", &["info"]),
            Engine::Podman => works("podman", &["info"]),
            Engine::Buildah => works("buildah", &["version"]),
        }
    }
}

/// buildah with its storage under the cache: vfs needs no kernel support beyond a plain
/// filesystem, and nothing lands in the machine's own image store.
pub fn buildah() -> Command {
    let root = cache_root().join("buildah");
    let mut command = Command::new("buildah");
    command
        .arg("--root")
        .arg(root.join("storage"))
        .arg("--runroot")
        .arg(root.join("run"))
        .args(["--storage-driver", "vfs"]);
    command
}

/// Runs a buildah command, captured, and returns its output.
pub fn run_buildah(description: &str, args: &[&str]) -> Result<String> {
    progress::run_captured("==> ", description, buildah().args(args))
}

/// `cargo xtask images`.
pub fn run(registry: &str, tag: &str, push: bool, engine: Engine) -> Result<()> {
    match engine.resolve()? {
        Engine::Buildah => {
            let binaries = cargo::build(
                "building the release binaries the images copy",
                &[
                    "--release",
                    "-p",
                    "controller",
                    "--bin",
                    "controller",
                    "-p",
                    "audit-scanner",
                    "--bin",
                    "audit-scanner",
                    "-p",
                    "policy-server",
                    "--bin",
                    "policy-server",
                ],
            )?;
            let dir = binaries.common_dir(&["controller", "audit-scanner", "policy-server"])?;
            let built = build_with_buildah(&dir, registry, tag)?;
            if push {
                for image in &built {
                    push_with_buildah(image, image, false)?;
                }
            }
            Ok(())
        }
        engine => build_with_daemon(engine, registry, tag, push),
    }
}

/// Builds both images with buildah from the binaries cargo built into `binaries`; returns their
/// names (`<registry>/<repository>:<tag>`).
pub fn build_with_buildah(binaries: &Path, registry: &str, tag: &str) -> Result<Vec<String>> {
    let runtime = base_image::ensure()?;
    let root = repo_root();
    let mut built = Vec::new();
    for image in IMAGES {
        let name = format!("{registry}/{}:{tag}", image.repository);
        let context = prebuilt_context(binaries, &image)?;
        let dockerfile = root.join(image.dockerfile).display().to_string();
        run_buildah(
            &format!("buildah build {name} ({})", image.dockerfile),
            &[
                "bud",
                "--isolation",
                "chroot",
                "--pull=never",
                "--quiet",
                "--build-arg",
                "BINARIES=prebuilt",
                "--build-arg",
                "PREBUILT_DIR=.",
                "--build-arg",
                &format!("RUNTIME_IMAGE={runtime}"),
                "-f",
                &dockerfile,
                "-t",
                &name,
                &context.display().to_string(),
            ],
        )?;
        built.push(name);
    }
    remove_intermediates();
    Ok(built)
}

/// The stages' working containers and the untagged images they hold.
fn remove_intermediates() {
    let _ = buildah_quietly(&["rm", "--all"]);
    let _ = buildah_quietly(&["rmi", "--prune"]);
}

/// A build context holding only the binaries an image copies (hard links when possible: the
/// debug binaries are large).
fn prebuilt_context(binaries: &Path, image: &Image) -> Result<PathBuf> {
    let context = cargo::output_dir("image-context")?.join(
        image
            .repository
            .rsplit('/')
            .next()
            .unwrap_or(image.repository),
    );
    let _ = fs::remove_dir_all(&context);
    fs::create_dir_all(&context).with_context(|| format!("creating {}", context.display()))?;
    for name in image.binaries {
        let from = binaries.join(name);
        let to = context.join(name);
        if fs::hard_link(&from, &to).is_err() {
            fs::copy(&from, &to)
                .with_context(|| format!("copying {} into {}", from.display(), to.display()))?;
        }
    }
    Ok(context)
}

/// Pushes a buildah image to `destination` (`host:port/repository:tag`); `insecure` for a
/// plain-HTTP registry.
pub fn push_with_buildah(image: &str, destination: &str, insecure: bool) -> Result<()> {
    let tls = format!("--tls-verify={}", !insecure);
    run_buildah(
        &format!("pushing {destination}"),
        &[
            "push",
            "--quiet",
            &tls,
            image,
            &format!("docker://{destination}"),
        ],
    )?;
    Ok(())
}

/// Docker or Podman: the Dockerfiles' own builder stage compiles the binaries.
fn build_with_daemon(engine: Engine, registry: &str, tag: &str, push: bool) -> Result<()> {
    let program = match engine {
        Engine::Podman => "podman",
        _ => "docker",
    };
    let root = repo_root();
    for image in IMAGES {
        let name = format!("{registry}/{}:{tag}", image.repository);
        println!("==> {program} build {name}");
        let status = Command::new(program)
            .current_dir(&root)
            .args(["build", "-f", image.dockerfile, "-t", &name, "."])
            .status()
            .with_context(|| format!("running {program} build"))?;
        if !status.success() {
            bail!("building {name} failed ({status})");
        }
        if push {
            let status = Command::new(program).args(["push", &name]).status()?;
            if !status.success() {
                bail!("pushing {name} failed ({status})");
            }
        }
    }
    Ok(())
}

/// Removes images from buildah's store, with what only they used.
pub fn remove_from_buildah(images: &[String]) {
    for image in images {
        let _ = buildah_quietly(&["rmi", image]);
    }
    remove_intermediates();
}

/// Whether buildah's store holds `image`.
pub fn buildah_has(image: &str) -> bool {
    buildah()
        .args(["inspect", "--type", "image", image])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs a short buildah step silently; its error output on failure.
fn buildah_quietly(args: &[&str]) -> Result<String> {
    let output = buildah()
        .args(args)
        .output()
        .context("cannot run buildah; install it (Debian: apt-get install buildah)")?;
    if !output.status.success() {
        bail!(
            "buildah {} failed: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Commits a single-layer image made of `rootfs` with `config` arguments (`--user`, `--env`,
/// `--entrypoint`, ...) as `name`.
pub fn commit_rootfs(name: &str, rootfs: &Path, config: &[&str]) -> Result<()> {
    let container = buildah_quietly(&["from", "scratch"])?;
    let result = (|| {
        buildah_quietly(&[
            "copy",
            "--quiet",
            &container,
            &rootfs.display().to_string(),
            "/",
        ])?;
        let mut args = vec!["config"];
        args.extend_from_slice(config);
        args.push(&container);
        buildah_quietly(&args)?;
        run_buildah(
            &format!("committing {name}"),
            &["commit", "--quiet", &container, name],
        )
    })();
    let _ = buildah_quietly(&["rm", &container]);
    result.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dockerfile_copies_the_binaries_the_prebuilt_context_holds() {
        for image in IMAGES {
            let path = repo_root().join(image.dockerfile);
            let text = fs::read_to_string(&path).expect("Dockerfile");
            assert!(
                text.contains("ARG BINARIES=build")
                    && text.contains("FROM ${BINARIES} AS binaries"),
                "{}: the builder stage must stay the default and be replaceable",
                image.dockerfile
            );
            let prebuilt = text
                .split("FROM scratch AS prebuilt")
                .nth(1)
                .and_then(|rest| rest.split("\nFROM ").next())
                .expect("a prebuilt stage");
            for binary in image.binaries {
                assert!(
                    prebuilt.contains(&format!("${{PREBUILT_DIR}}/{binary}")),
                    "{}: the prebuilt stage does not copy {binary}",
                    image.dockerfile
                );
                assert!(
                    text.contains(&format!("COPY --from=binaries /out/{binary} /{binary}")),
                    "{}: the runtime stage does not copy {binary}",
                    image.dockerfile
                );
            }
        }
    }
}
