//! Certificates and keys of the local control plane, made with the `openssl` command.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .context("cannot run `openssl`; install it (Debian: apt-get install openssl)")?;
    if !output.status.success() {
        bail!(
            "openssl {} failed: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Subject alternative names of the apiserver's serving certificate.
pub fn apiserver_sans(advertise_address: &str, service_ip: &str) -> String {
    format!(
        "subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:{service_ip},IP:{advertise_address}"
    )
}

/// Writes `ca.{crt,key}`, `apiserver.{crt,key}`, `admin.{crt,key}` (group system:masters) and
/// the service-account signing key pair `sa.{key,pub}` into `dir`, unless already there.
pub fn ensure(dir: &Path, advertise_address: &str, service_ip: &str) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if dir.join("sa.pub").is_file() {
        return Ok(());
    }
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "365",
            "-subj",
            "/CN=kubewarden-rs-local-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    )?;
    let sans = apiserver_sans(advertise_address, service_ip);
    issue(dir, "apiserver", "/CN=kube-apiserver", &sans)?;
    issue(
        dir,
        "admin",
        "/CN=admin/O=system:masters",
        "extendedKeyUsage=clientAuth",
    )?;
    openssl(dir, &["genrsa", "-out", "sa.key", "2048"])?;
    openssl(dir, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])
}

/// Namespaces whose webhook Services get the apiserver's client certificate.
const WEBHOOK_CLIENT_NAMES: &[&str] = &["*.kubewarden.svc"];

/// Writes `admission-config.yaml`, the apiserver's `--admission-control-config-file`: the
/// webhook admission plugins present `webhook-client.{crt,key}` (signed by the cluster CA) to
/// webhook Services in the stack's namespace, so policy-servers in mTLS mode (the chart's
/// `mTLS.enable`, client CA = `ca.crt`) let the apiserver in. A server that asks for no client
/// certificate is sent none, so this changes nothing without mTLS. Returns the file's path.
pub fn webhook_admission_config(dir: &Path) -> Result<std::path::PathBuf> {
    issue(
        dir,
        "webhook-client",
        "/CN=kube-apiserver-webhook-client",
        "extendedKeyUsage=clientAuth",
    )?;
    let path = |f: &str| dir.join(f).display().to_string();
    let users: String = WEBHOOK_CLIENT_NAMES
        .iter()
        .map(|name| {
            format!(
                "- name: '{name}'\n  user:\n    client-certificate: {crt}\n    client-key: {key}\n",
                crt = path("webhook-client.crt"),
                key = path("webhook-client.key"),
            )
        })
        .collect();
    let kubeconfig = dir.join("webhook-client.kubeconfig");
    fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nusers:\n{users}"),
    )
    .with_context(|| format!("writing {}", kubeconfig.display()))?;
    let plugins: String = ["ValidatingAdmissionWebhook", "MutatingAdmissionWebhook"]
        .iter()
        .map(|plugin| {
            format!(
                "- name: {plugin}\n  configuration:\n    apiVersion: apiserver.config.k8s.io/v1\n    kind: WebhookAdmissionConfiguration\n    kubeConfigFile: {}\n",
                kubeconfig.display()
            )
        })
        .collect();
    let config = dir.join("admission-config.yaml");
    fs::write(
        &config,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n{plugins}"
        ),
    )
    .with_context(|| format!("writing {}", config.display()))?;
    Ok(config)
}

/// Issues `<name>.{crt,key}` for `subject` with the CA in `dir`, with `extensions` (one
/// openssl extension line), unless `<name>.crt` exists.
pub fn issue(dir: &Path, name: &str, subject: &str, extensions: &str) -> Result<()> {
    if dir.join(format!("{name}.crt")).is_file() {
        return Ok(());
    }
    let ext_file = format!("{name}.ext");
    fs::write(dir.join(&ext_file), format!("{extensions}\n")).context("writing extensions")?;
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "365",
            "-out",
            &format!("{name}.crt"),
            "-extfile",
            &ext_file,
        ],
    )
}

/// A kubeconfig for the admin client certificate.
pub fn admin_kubeconfig(dir: &Path, server: &str) -> String {
    kubeconfig(dir, server, "admin")
}

/// A kubeconfig for the client certificate `<user>.{crt,key}` in `dir`.
pub fn kubeconfig(dir: &Path, server: &str, user: &str) -> String {
    let path = |f: &str| dir.join(f).display().to_string();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: {user}\n  user:\n    client-certificate: {crt}\n    client-key: {key}\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: {user}\ncurrent-context: local\n",
        ca = path("ca.crt"),
        crt = path(&format!("{user}.crt")),
        key = path(&format!("{user}.key")),
    )
}
