//! The runtime base image where `gcr.io/distroless/cc-debian12:nonroot` cannot be pulled: the
//! same Debian 12 packages distroless `cc` is made of, taken from this machine's dpkg database
//! (the machine runs Debian 12), with distroless's users (`nonroot` is 65532), a world-writable
//! `/tmp`, the CA bundle, and no shell or package manager.

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{buildah_has, commit_rootfs};
use crate::cargo;

/// Name of the assembled image in buildah's store.
pub const NAME: &str = "localhost/kubewarden-rs/cc-debian12:nonroot";

/// What distroless `cc-debian12` holds: glibc, libgcc, OpenSSL, /etc/services and friends,
/// time zones (and the CA bundle, copied on its own).
const PACKAGES: &[&str] = &["libc6", "libgcc-s1", "libssl3", "netbase", "tzdata"];

const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n";

/// The base image, assembled first if buildah's store does not hold it.
pub fn ensure() -> Result<&'static str> {
    if buildah_has(NAME) {
        return Ok(NAME);
    }
    let rootfs = cargo::output_dir("base-image-rootfs")?;
    let _ = fs::remove_dir_all(&rootfs);
    assemble(&rootfs)?;
    commit_rootfs(
        NAME,
        &rootfs,
        &[
            "--user",
            "65532:65532",
            "--workingdir",
            "/home/nonroot",
            "--env",
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "--env",
            &format!("SSL_CERT_FILE={CA_BUNDLE}"),
        ],
    )?;
    let _ = fs::remove_dir_all(&rootfs);
    Ok(NAME)
}

/// Files of a Debian package, from `dpkg -L`.
fn package_files(package: &str) -> Result<Vec<String>> {
    let output = Command::new("dpkg")
        .args(["-L", package])
        .output()
        .context("cannot run dpkg: the base image is assembled from Debian packages")?;
    if !output.status.success() {
        bail!(
            "the package {package} is not installed, and the base image needs it \
             (apt-get install {package})"
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

fn assemble(rootfs: &Path) -> Result<()> {
    // Debian 12 merges /usr: the top-level directories are links, as in distroless.
    for dir in [
        "usr/bin",
        "usr/sbin",
        "usr/lib",
        "usr/lib64",
        "etc/ssl/certs",
    ] {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    for link in ["bin", "sbin", "lib", "lib64"] {
        std::os::unix::fs::symlink(format!("usr/{link}"), rootfs.join(link))?;
    }
    for package in PACKAGES {
        for file in package_files(package)? {
            let source = Path::new(&file);
            // Directories come with their files; a listed directory may be a link on the host.
            if source.is_dir() {
                continue;
            }
            let (Some(parent), Some(name)) = (source.parent(), source.file_name()) else {
                continue;
            };
            // The real directory, so that /lib/x86_64-linux-gnu/... lands under usr/lib.
            let parent = parent
                .canonicalize()
                .with_context(|| format!("resolving {}", parent.display()))?;
            let target_dir = rootfs.join(parent.strip_prefix("/").unwrap_or(&parent));
            fs::create_dir_all(&target_dir)?;
            copy_preserving_links(source, &target_dir.join(name))?;
        }
    }
    fs::copy(CA_BUNDLE, rootfs.join(CA_BUNDLE.trim_start_matches('/'))).with_context(|| {
        format!("copying {CA_BUNDLE} (Debian: apt-get install ca-certificates)")
    })?;
    fs::write(rootfs.join("etc/passwd"), PASSWD)?;
    fs::write(rootfs.join("etc/group"), GROUP)?;
    let home = rootfs.join("home/nonroot");
    fs::create_dir_all(&home)?;
    chown(&home, Some(65532), Some(65532)).context("giving /home/nonroot to 65532")?;
    let tmp = rootfs.join("tmp");
    fs::create_dir_all(&tmp)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777))?;
    Ok(())
}

fn copy_preserving_links(source: &Path, target: &Path) -> Result<()> {
    let metadata = fs::symlink_metadata(source)?;
    if metadata.file_type().is_symlink() {
        let link = fs::read_link(source)?;
        let _ = fs::remove_file(target);
        std::os::unix::fs::symlink(link, target)
            .with_context(|| format!("linking {}", target.display()))?;
    } else {
        fs::copy(source, target).with_context(|| format!("copying {}", source.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_assembled_root_holds_glibc_the_ca_bundle_and_the_nonroot_user() {
        if !Path::new("/usr/bin/dpkg").is_file() || !Path::new(CA_BUNDLE).is_file() {
            eprintln!("skipped: not a Debian machine with ca-certificates");
            return;
        }
        let rootfs = std::env::temp_dir().join(format!("base-image-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&rootfs);
        assemble(&rootfs).expect("assembled");
        for file in [
            "lib64/ld-linux-x86-64.so.2",
            "usr/lib/x86_64-linux-gnu/libc.so.6",
            "usr/lib/x86_64-linux-gnu/libgcc_s.so.1",
            "etc/ssl/certs/ca-certificates.crt",
            "etc/services",
        ] {
            assert!(rootfs.join(file).exists(), "{file} missing");
        }
        let passwd = fs::read_to_string(rootfs.join("etc/passwd")).expect("passwd");
        assert!(passwd.contains("nonroot:x:65532:65532"));
        let mode = fs::metadata(rootfs.join("tmp"))
            .expect("tmp")
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o1777);
        let _ = fs::remove_dir_all(&rootfs);
    }
}
