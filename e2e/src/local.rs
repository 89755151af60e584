//! Local mode: the processes that stand in for the pods kwok only pretends to run.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use api_types::config::launch::PolicyServerLaunch;
use api_types::crd::{PolicyReloadMode, PolicyServer};
use api_types::naming;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

/// Child processes killed when dropped.
#[derive(Debug, Default)]
pub struct Processes(Vec<Child>);

impl Processes {
    pub fn push(&mut self, child: Child) {
        self.0.push(child);
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn log_file(dir: &Path, name: &str) -> Result<(Stdio, Stdio)> {
    let file = File::options()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .with_context(|| format!("opening the log of {name}"))?;
    Ok((Stdio::from(file.try_clone()?), Stdio::from(file)))
}

/// Starts the controller binary ([`crate::stack_binary`]) on the stack's namespace.
pub fn start_controller(logs: &Path, host_network: bool) -> Result<Child> {
    let binary = crate::stack_binary("controller")?;
    let (out, err) = log_file(logs, "controller")?;
    let mut command = Command::new(&binary);
    command
        .args([
            "--leader-elect",
            &format!("--deployments-namespace={}", crate::NAMESPACE),
            // Not 8081: that is the default policy-server readiness port, bound by the local
            // policy-server processes on this same host.
            "--health-probe-bind-address=127.0.0.1:18081",
            "--metrics-bind-address=0",
            "--log-level=info,kube=warn",
        ])
        .stdout(out)
        .stderr(err);
    if host_network {
        command.arg("--host-network");
    }
    command
        .spawn()
        .with_context(|| format!("starting the controller {}", binary.display()))
}

struct Running {
    child: Child,
    /// Versions of what the process was started from; a change restarts it.
    key: String,
}

/// The "kubelet" of local mode: one policy-server process per PolicyServer, restarted when
/// its ConfigMap, Secret or ports change (the controller rolls the pods then).
pub struct LocalPolicyServers {
    client: Client,
    /// The policy-server binary ([`crate::stack_binary`]).
    policy_server: PathBuf,
    dir: PathBuf,
    running: Arc<Mutex<BTreeMap<String, Running>>>,
}

impl std::fmt::Debug for LocalPolicyServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPolicyServers")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn text(data: Option<&BTreeMap<String, String>>, key: &str) -> String {
    data.and_then(|d| d.get(key)).cloned().unwrap_or_default()
}

impl LocalPolicyServers {
    pub fn new(client: Client, dir: PathBuf) -> Result<Self> {
        Ok(LocalPolicyServers {
            client,
            policy_server: crate::stack_binary("policy-server")?,
            dir,
            running: Arc::new(Mutex::new(BTreeMap::new())),
        })
    }

    /// Keeps the processes in step with the cluster every half second, until the returned
    /// task is aborted.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let Err(err) = self.sync().await {
                    eprintln!("local policy-servers: {err:#}");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    }

    async fn sync(&self) -> Result<()> {
        let servers: Api<PolicyServer> = Api::all(self.client.clone());
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), crate::NAMESPACE);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), crate::NAMESPACE);
        let mut wanted = BTreeMap::new();
        for ps in servers.list(&ListParams::default()).await?.items {
            if ps.metadata.deletion_timestamp.is_some() || ps.spec.replicas == Some(0) {
                continue;
            }
            let resource = naming::policy_server_resource_name(&ps.name_any());
            let (Some(cm), Some(secret)) = (
                config_maps.get_opt(&resource).await?,
                secrets.get_opt(&resource).await?,
            ) else {
                continue;
            };
            // In place, a policy change is written into the running process's policies file,
            // as the kubelet refreshes a mounted ConfigMap; only new sources restart it.
            let config = if ps.spec.effective_policy_reload_mode() == PolicyReloadMode::InPlace {
                format!(
                    "in-place:{}",
                    text(cm.data.as_ref(), naming::SOURCES_CONFIG_KEY)
                )
            } else {
                cm.resource_version().unwrap_or_default()
            };
            let key = format!(
                "{}/{}/{}/{}",
                config,
                secret.resource_version().unwrap_or_default(),
                ps.spec.webhook_port,
                ps.spec.readiness_probe_port
            );
            wanted.insert(ps.name_any(), (key, ps, cm, secret));
        }
        let mut running = self
            .running
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        running.retain(|name, process| {
            let keep = wanted
                .get(name)
                .is_some_and(|(key, ..)| *key == process.key);
            if !keep {
                let _ = process.child.kill();
                let _ = process.child.wait();
            }
            keep
        });
        for (name, (key, ps, cm, secret)) in wanted {
            if running.contains_key(&name) {
                if ps.spec.effective_policy_reload_mode() == PolicyReloadMode::InPlace {
                    self.refresh_policies(&name, &cm)?;
                }
                continue;
            }
            let child = self.start(&name, &ps, &cm, &secret)?;
            running.insert(name, Running { child, key });
        }
        Ok(())
    }

    /// Replaces the policies file of a running process when the ConfigMap's differs, whole
    /// (written beside it, then renamed over it), as the kubelet swaps a mounted ConfigMap.
    fn refresh_policies(&self, name: &str, cm: &ConfigMap) -> Result<()> {
        let dir = self.dir.join(name);
        let wanted = text(cm.data.as_ref(), naming::POLICIES_CONFIG_KEY);
        let path = dir.join("policies.yml");
        if std::fs::read_to_string(&path).ok().as_deref() == Some(wanted.as_str()) {
            return Ok(());
        }
        let next = dir.join("policies.yml.next");
        std::fs::write(&next, wanted)?;
        std::fs::rename(&next, &path).with_context(|| format!("replacing {}", path.display()))
    }

    fn start(
        &self,
        name: &str,
        ps: &PolicyServer,
        cm: &ConfigMap,
        secret: &Secret,
    ) -> Result<Child> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("policies.yml"),
            text(cm.data.as_ref(), naming::POLICIES_CONFIG_KEY),
        )?;
        std::fs::write(
            dir.join("sources.yml"),
            text(cm.data.as_ref(), naming::SOURCES_CONFIG_KEY),
        )?;
        let data = secret.data.clone().unwrap_or_default();
        for key in [naming::TLS_CERT_KEY, naming::TLS_KEY_KEY] {
            let bytes = data.get(key).map(|b| b.0.clone()).unwrap_or_default();
            std::fs::write(dir.join(key), bytes)?;
        }
        let (out, err) = log_file(&self.dir, &format!("policy-server-{name}"))?;
        PolicyServerLaunch {
            policies: dir.join("policies.yml"),
            download_dir: dir.clone(),
            sources: Some(dir.join("sources.yml")),
            addr: "0.0.0.0".to_string(),
            port: u16::try_from(ps.spec.webhook_port).context("the webhook port")?,
            readiness_port: u16::try_from(ps.spec.readiness_probe_port)
                .context("the readiness probe port")?,
            cert_file: dir.join(naming::TLS_CERT_KEY),
            key_file: dir.join(naming::TLS_KEY_KEY),
            log_level: "info".to_string(),
        }
        .command(&self.policy_server)
        .env(
            "KUBEWARDEN_RELOAD_POLICIES",
            (ps.spec.effective_policy_reload_mode() == PolicyReloadMode::InPlace).to_string(),
        )
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting the policy-server of {name}"))
    }
}

impl Drop for LocalPolicyServers {
    fn drop(&mut self) {
        if let Ok(mut running) = self.running.lock() {
            for process in running.values_mut() {
                let _ = process.child.kill();
                let _ = process.child.wait();
            }
        }
    }
}
