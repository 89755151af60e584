//! Turns policies.yml into served policies: every distinct module fetched and compiled once,
//! every policy's settings validated. A policy that cannot be loaded is kept, with the reason,
//! so that requests for it get a clear rejection instead of a 404.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use api_types::config::{
    PoliciesConfig, PolicyEntry, PolicyGroupMemberEntry, PolicyOrGroup, VerificationConfig,
};
use api_types::crd::PolicyMode;
use api_types::error_text::with_causes;
use api_types::group_expression::GroupExpression;
use api_types::load_status::{LoadFailureReason, PolicyLoadStatus, RejectedUpdate};
use policy_evaluator::host::HostCapabilities;
use policy_evaluator::{
    EvaluationLimits, EvaluatorSettings, LoadError, PolicyEngine, PolicyEvaluator, PolicyModule,
};

use crate::api::ServedPolicies;
use crate::capabilities::{ContextGrants, ServerCapabilities, context_grants};
use crate::fetch::{FetchError, Fetcher};
use crate::signatures::{SignatureVerifier, VerifyError};

/// How a served policy decides.
#[derive(Debug)]
pub enum Decider {
    Single(PolicyEvaluator),
    Group {
        expression: GroupExpression,
        members: BTreeMap<String, PolicyEvaluator>,
        message: String,
    },
}

/// A policy as the server runs it.
#[derive(Debug, Clone)]
pub struct ServedPolicy {
    pub id: String,
    /// The [digest](api_types::config::PolicyOrGroup::digest) of the configuration entry
    /// this policy was loaded from.
    pub digest: String,
    /// A newer entry that could not be loaded in place of this one (in-place reloading).
    pub rejected_update: Option<RejectedUpdate>,
    pub mode: PolicyMode,
    pub allowed_to_mutate: bool,
    /// Replaces the policy's own message on rejection.
    pub message: Option<String>,
    /// The decider (shared with the evaluation threads), or why the policy cannot run.
    pub decider: Result<Arc<Decider>, LoadFailure>,
}

/// Why a module cannot be used. Shared (in an `Arc`) by every policy that names the module.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("cannot load {url}")]
    Load {
        url: String,
        #[source]
        source: LoadError,
    },
    /// A module the load did not fetch first: a bug, reported rather than a panic.
    #[error("{url} was not fetched")]
    NotFetched { url: String },
}

/// What fetching one module gave.
type Fetched = Result<Vec<u8>, Arc<ModuleError>>;

/// Why a policy cannot be served: what its requests are answered with (code 500) and what
/// `GET /status` reports.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct LoadFailure {
    pub reason: LoadFailureReason,
    pub message: String,
}

impl LoadFailure {
    /// The message goes to API clients (code-500 answers) and onto the policy's status, so
    /// credentials in module URLs are masked.
    fn new(reason: LoadFailureReason, message: impl Into<String>) -> Self {
        LoadFailure {
            reason,
            message: without_url_credentials(&message.into()),
        }
    }
}

/// `text` with the `user:password@` of every URL in it replaced by `***@`.
fn without_url_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let authority_end = after
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(after.len());
        match after[..authority_end].rfind('@') {
            Some(credentials_end) => {
                out.push_str("***");
                rest = &after[credentials_end..];
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    out
}

impl ServedPolicy {
    /// What `GET /status` says of this policy now: its load state, and whether it has given
    /// a result it was not understood in (a group: the first such member).
    pub fn load_status(&self) -> PolicyLoadStatus {
        PolicyLoadStatus {
            rejected_update: self.rejected_update.clone(),
            ..self.load_state().with_digest(&self.digest)
        }
    }

    fn load_state(&self) -> PolicyLoadStatus {
        let decider = match &self.decider {
            Err(failure) => {
                return PolicyLoadStatus::failed(failure.reason, failure.message.clone());
            }
            Ok(decider) => decider.as_ref(),
        };
        let not_understood = match decider {
            Decider::Single(evaluator) => evaluator.result_not_understood().map(str::to_string),
            Decider::Group { members, .. } => members.iter().find_map(|(name, evaluator)| {
                evaluator
                    .result_not_understood()
                    .map(|shape| format!("member {name}: {shape}"))
            }),
        };
        match not_understood {
            Some(shape) => PolicyLoadStatus::loaded_with_result_not_understood(shape),
            None => PolicyLoadStatus::loaded(),
        }
    }
}

/// Everything that shapes how policies run, from the command line.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub default_timeout: Option<Duration>,
    pub memory_bytes: usize,
    /// Instances of each policy kept for reuse (one per worker); 0 for a fresh instance per
    /// evaluation.
    pub reused_instances: usize,
    /// What policies may ask the host for.
    pub host: Arc<dyn HostCapabilities>,
}

/// Modules by URL, each compiled once however many policies use it, from the bytes fetched
/// beforehand.
struct ModuleCache<'a> {
    engine: &'a PolicyEngine,
    fetched: HashMap<String, Fetched>,
    /// Modules compiled before (by an earlier load of a reloading server), used as they are.
    known: HashMap<String, Arc<PolicyModule>>,
    modules: HashMap<String, Result<Arc<PolicyModule>, Arc<ModuleError>>>,
}

impl ModuleCache<'_> {
    fn get(&mut self, url: &str) -> Result<Arc<PolicyModule>, Arc<ModuleError>> {
        if let Some(module) = self.known.get(url) {
            return Ok(module.clone());
        }
        if let Some(module) = self.modules.get(url) {
            return module.clone();
        }
        let started = std::time::Instant::now();
        let fetched = self.fetched.remove(url).unwrap_or_else(|| {
            Err(Arc::new(ModuleError::NotFetched {
                url: url.to_string(),
            }))
        });
        let module = fetched.and_then(|wasm| {
            self.engine.load(&wasm).map(Arc::new).map_err(|source| {
                Arc::new(ModuleError::Load {
                    url: url.to_string(),
                    source,
                })
            })
        });
        match &module {
            Ok(m) => tracing::info!(
                module = url,
                digest = m.digest(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "module ready"
            ),
            Err(error) => {
                let reason = with_causes(error.as_ref());
                tracing::error!(module = url, %reason, "module cannot be used")
            }
        }
        self.modules.insert(url.to_string(), module.clone());
        module
    }
}

fn evaluator(
    modules: &mut ModuleCache<'_>,
    options: &LoadOptions,
    id: &str,
    module: &str,
    settings: Option<serde_json::Value>,
    timeout_eval_seconds: Option<u32>,
    host_capabilities: Option<Vec<String>>,
) -> Result<PolicyEvaluator, LoadFailure> {
    let module = modules.get(module).map_err(|error| {
        LoadFailure::new(
            LoadFailureReason::ModuleUnavailable,
            with_causes(error.as_ref()),
        )
    })?;
    let mut config = EvaluatorSettings::new(id);
    config.settings = settings;
    config.host_capabilities = host_capabilities.unwrap_or_default();
    config.limits = EvaluationLimits {
        timeout: match (options.default_timeout, timeout_eval_seconds) {
            (None, _) => None,
            (Some(_), Some(seconds)) => Some(Duration::from_secs(seconds.into())),
            (Some(default), None) => Some(default),
        },
        memory_bytes: options.memory_bytes,
    };
    config.reused_instances = options.reused_instances;
    config.host = options.host.clone();
    let evaluator = PolicyEvaluator::new(module, config);
    let answer = evaluator.validate_settings().map_err(|e| {
        LoadFailure::new(
            LoadFailureReason::SettingsInvalid,
            format!("cannot validate the settings: {}", with_causes(&e)),
        )
    })?;
    if !answer.valid {
        return Err(LoadFailure::new(
            LoadFailureReason::SettingsInvalid,
            format!(
                "Policy settings are invalid: {}",
                answer.message.unwrap_or_else(|| "no reason given".into())
            ),
        ));
    }
    evaluator.check_result_shape();
    Ok(evaluator)
}

fn load_single(
    modules: &mut ModuleCache<'_>,
    options: &LoadOptions,
    id: &str,
    entry: PolicyEntry,
    digest: String,
) -> ServedPolicy {
    let decider = evaluator(
        modules,
        options,
        id,
        &entry.module,
        entry.settings,
        entry.timeout_eval_seconds,
        entry.host_capabilities,
    )
    .map(|evaluator| Arc::new(Decider::Single(evaluator)));
    ServedPolicy {
        id: id.to_string(),
        digest,
        rejected_update: None,
        mode: entry.policy_mode,
        allowed_to_mutate: entry.allowed_to_mutate,
        message: entry.message,
        decider,
    }
}

fn load_group(
    modules: &mut ModuleCache<'_>,
    options: &LoadOptions,
    id: &str,
    expression: &str,
    members: BTreeMap<String, PolicyGroupMemberEntry>,
    message: String,
) -> Result<Decider, LoadFailure> {
    let invalid = |message: String| LoadFailure::new(LoadFailureReason::InvalidGroup, message);
    let expression = GroupExpression::parse(expression).map_err(|e| invalid(e.to_string()))?;
    let mut evaluators = BTreeMap::new();
    for (name, member) in members {
        let member_id = format!("{id}/{name}");
        let evaluator = evaluator(
            modules,
            options,
            &member_id,
            &member.module,
            member.settings,
            member.timeout_eval_seconds,
            member.host_capabilities,
        )
        .map_err(|e| LoadFailure::new(e.reason, format!("member {name}: {}", e.message)))?;
        evaluators.insert(name, evaluator);
    }
    if let Some(unknown) = expression
        .members()
        .into_iter()
        .find(|m| !evaluators.contains_key(*m))
    {
        return Err(invalid(format!(
            "the expression calls {unknown}(), which is not a member"
        )));
    }
    Ok(Decider::Group {
        expression,
        members: evaluators,
        message,
    })
}

/// Every module URL `config` uses, once each.
pub fn module_urls(config: &PoliciesConfig) -> Vec<String> {
    let mut urls: Vec<String> = config
        .0
        .values()
        .flat_map(|entry| match entry {
            PolicyOrGroup::Policy(policy) => vec![policy.module.clone()],
            PolicyOrGroup::Group(group) => {
                group.policies.values().map(|m| m.module.clone()).collect()
            }
        })
        .collect();
    urls.sort();
    urls.dedup();
    urls
}

/// Policies that get an evaluator of their own: each policy and each member of a group.
pub fn evaluator_count(config: &PoliciesConfig) -> usize {
    config
        .0
        .values()
        .map(|entry| match entry {
            PolicyOrGroup::Policy(_) => 1,
            PolicyOrGroup::Group(group) => group.policies.len(),
        })
        .sum()
}

/// Modules by URL.
type Modules = HashMap<String, Arc<PolicyModule>>;

/// Loads every policy of `config` from the fetched modules (by URL), or from `known` modules
/// compiled before. Never fails as a whole: each policy carries its own error. Returns the
/// policies and every module this load could use, by URL.
fn load_policies(
    engine: &PolicyEngine,
    config: PoliciesConfig,
    fetched: HashMap<String, Fetched>,
    known: Modules,
    options: &LoadOptions,
) -> (HashMap<String, ServedPolicy>, Modules) {
    let mut modules = ModuleCache {
        engine,
        fetched,
        known,
        modules: HashMap::new(),
    };
    let mut served = HashMap::new();
    for (id, entry) in config.0 {
        let digest = entry.digest();
        let policy = match entry {
            PolicyOrGroup::Policy(entry) => load_single(&mut modules, options, &id, entry, digest),
            PolicyOrGroup::Group(group) => {
                let decider = load_group(
                    &mut modules,
                    options,
                    &id,
                    &group.expression,
                    group.policies,
                    group.message,
                )
                .map(Arc::new);
                ServedPolicy {
                    id: id.clone(),
                    digest,
                    rejected_update: None,
                    mode: group.policy_mode,
                    allowed_to_mutate: false,
                    message: None,
                    decider,
                }
            }
        };
        match &policy.decider {
            Ok(_) => tracing::info!(policy = %id, mode = policy.mode.as_str(), "policy loaded"),
            Err(reason) => {
                tracing::error!(policy = %id, %reason, "policy cannot be served; its requests will be rejected")
            }
        }
        served.insert(id, policy);
    }
    let mut usable = modules.known;
    usable.extend(
        modules
            .modules
            .into_iter()
            .filter_map(|(url, module)| Some((url, module.ok()?))),
    );
    (served, usable)
}

/// Gives policy `id` (and, for a group, its members `id/<member>`) the grants it has in
/// `current` instead of those of its new entry.
fn keep_grants(grants: &mut ContextGrants, current: &ContextGrants, id: &str) {
    let member_prefix = format!("{id}/");
    let of_policy = |key: &String| *key == id || key.starts_with(&member_prefix);
    grants.retain(|key, _| !of_policy(key));
    grants.extend(
        current
            .iter()
            .filter(|(key, _)| of_policy(key))
            .map(|(key, kinds)| (key.clone(), kinds.clone())),
    );
}

/// Loads configurations: the first at start-up, and with in-place reloading each newer one
/// beside the set being served, with the same engine, module sources and host capabilities.
pub struct Loader {
    pub engine: PolicyEngine,
    pub options: LoadOptions,
    pub fetcher: Fetcher,
    pub signatures: Arc<SignatureVerifier>,
    /// Signatures modules must carry (`--verification-path`).
    pub verification: Option<Arc<VerificationConfig>>,
    pub capabilities: Arc<ServerCapabilities>,
    /// The modules the served set uses, by URL: a reload compiles (and fetches) only modules
    /// it has not got.
    compiled: Mutex<Modules>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// What one load did, for its log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadSummary {
    /// Policies served as they were (same entry, already loaded).
    pub kept: usize,
    /// Policies loaded from their entry.
    pub loaded: usize,
    /// Policies that cannot be served at all.
    pub failed: usize,
    /// Changed policies whose new entry cannot be loaded: their previous version goes on.
    pub rejected_updates: usize,
}

impl Loader {
    pub fn new(
        engine: PolicyEngine,
        options: LoadOptions,
        fetcher: Fetcher,
        signatures: Arc<SignatureVerifier>,
        verification: Option<Arc<VerificationConfig>>,
        capabilities: Arc<ServerCapabilities>,
    ) -> Self {
        Loader {
            engine,
            options,
            fetcher,
            signatures,
            verification,
            capabilities,
            compiled: Mutex::new(Modules::new()),
        }
    }

    /// Loads `config` beside `current`, the set being served, which goes on serving
    /// meanwhile:
    /// - a policy whose entry has the [digest](PolicyOrGroup::digest) of a loaded policy of
    ///   `current` is that policy (its warm instances and what it learnt included);
    /// - any other is loaded, fetching and compiling only modules not already compiled;
    /// - a policy of `current` whose new entry cannot be loaded keeps its current version,
    ///   with the failure as its [`rejected_update`](ServedPolicy::rejected_update).
    ///
    /// Policies of `current` that `config` does not list are left out. Fails only when a
    /// loading task panics.
    pub async fn load(
        &self,
        config: PoliciesConfig,
        current: &ServedPolicies,
    ) -> Result<(ServedPolicies, LoadSummary), tokio::task::JoinError> {
        let started = Instant::now();
        let all_urls = module_urls(&config);
        // Every kind the new set or the current one may read is watched before either runs;
        // a policy that keeps its current version keeps its current grants (below).
        let current_grants = self.capabilities.grants();
        let mut grants = context_grants(&config);
        let mut both = grants.clone();
        both.extend(
            current_grants
                .iter()
                .map(|(id, kinds)| (id.clone(), kinds.clone())),
        );
        if let Err(error) = self.capabilities.watch_kinds(&both).await {
            let reason = with_causes(&error);
            tracing::error!(%reason, "context-aware policies cannot read some kinds");
        }
        let mut served = ServedPolicies::new();
        let mut to_load = PoliciesConfig::default();
        for (id, entry) in config.0 {
            match current.get(&id) {
                Some(policy) if policy.decider.is_ok() && policy.digest == entry.digest() => {
                    let policy = if policy.rejected_update.is_some() {
                        Arc::new(ServedPolicy {
                            rejected_update: None,
                            ..ServedPolicy::clone(policy)
                        })
                    } else {
                        policy.clone()
                    };
                    served.insert(id, policy);
                }
                _ => {
                    to_load.0.insert(id, entry);
                }
            }
        }
        let mut summary = LoadSummary {
            kept: served.len(),
            ..LoadSummary::default()
        };
        let known = self.lock_compiled().clone();
        let missing: Vec<String> = module_urls(&to_load)
            .into_iter()
            .filter(|url| !known.contains_key(url))
            .collect();
        let fetched = self.fetch(missing).await?;
        let engine = self.engine.clone();
        let options = self.options.clone();
        let (loaded, usable) = tokio::task::spawn_blocking(move || {
            load_policies(&engine, to_load, fetched, known, &options)
        })
        .await?;
        for (id, policy) in loaded {
            let policy = match (current.get(&id), &policy.decider) {
                (Some(previous), Err(failure)) if previous.decider.is_ok() => {
                    tracing::error!(policy = %id, reason = %failure, "the new version of the policy cannot be loaded; its previous version goes on serving");
                    summary.rejected_updates += 1;
                    keep_grants(&mut grants, &current_grants, &id);
                    Arc::new(ServedPolicy {
                        rejected_update: Some(RejectedUpdate {
                            digest: policy.digest.clone(),
                            reason: failure.reason,
                            message: failure.message.clone(),
                        }),
                        ..ServedPolicy::clone(previous)
                    })
                }
                (_, Err(_)) => {
                    summary.failed += 1;
                    Arc::new(policy)
                }
                (_, Ok(_)) => {
                    summary.loaded += 1;
                    Arc::new(policy)
                }
            };
            served.insert(id, policy);
        }
        self.capabilities.replace_grants(grants);
        // Modules no served policy uses any more are dropped with the set that used them.
        let mut compiled = usable;
        compiled.retain(|url, _| all_urls.contains(url));
        *self.lock_compiled() = compiled;
        tracing::info!(
            kept = summary.kept,
            loaded = summary.loaded,
            failed = summary.failed,
            rejected_updates = summary.rejected_updates,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "policies loaded"
        );
        Ok((served, summary))
    }

    fn lock_compiled(&self) -> std::sync::MutexGuard<'_, Modules> {
        // Replaced whole: a poisoned lock still holds a complete map.
        self.compiled.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fetches (and verifies, with a verification config) every module of `urls` at once.
    async fn fetch(
        &self,
        urls: Vec<String>,
    ) -> Result<HashMap<String, Fetched>, tokio::task::JoinError> {
        let mut downloads = tokio::task::JoinSet::new();
        for url in urls {
            let fetcher = self.fetcher.clone();
            let signatures = self.signatures.clone();
            let verification = self.verification.clone();
            downloads.spawn(async move {
                let result = match verification {
                    Some(verification) => signatures
                        .fetch_module(&url, &verification)
                        .await
                        .map_err(ModuleError::from),
                    None => fetcher.fetch(&url).await.map_err(ModuleError::from),
                };
                (url, result.map_err(Arc::new))
            });
        }
        let mut fetched = HashMap::new();
        while let Some(done) = downloads.join_next().await {
            let (url, result) = done?;
            if let Err(error) = &result {
                let reason = with_causes(error.as_ref());
                tracing::error!(module = %url, %reason, "module cannot be fetched");
            }
            fetched.insert(url, result);
        }
        Ok(fetched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::kubernetes::KindRef;

    #[test]
    fn a_policy_keeping_its_version_keeps_its_grants() {
        let kind = |kind: &str| KindRef {
            api_version: "v1".to_string(),
            kind: kind.to_string(),
        };
        let grants = |entries: &[(&str, &str)]| -> ContextGrants {
            entries
                .iter()
                .map(|(id, k)| (id.to_string(), [kind(k)].into()))
                .collect()
        };
        let current = grants(&[("p", "Namespace"), ("g/a", "Pod"), ("other", "Service")]);
        let mut new = grants(&[("p", "ConfigMap"), ("g/b", "Secret"), ("other", "Node")]);
        keep_grants(&mut new, &current, "g");
        keep_grants(&mut new, &current, "p");
        assert_eq!(
            new,
            grants(&[("p", "Namespace"), ("g/a", "Pod"), ("other", "Node")])
        );
    }

    #[test]
    fn credentials_in_urls_are_masked() {
        assert_eq!(
            without_url_credentials(
                "cannot fetch https://alice:s3cret@example.com/p.wasm: 401; also http://h/x and registry://bob@r.io/p:v1"
            ),
            "cannot fetch https://***@example.com/p.wasm: 401; also http://h/x and registry://***@r.io/p:v1"
        );
        assert_eq!(without_url_credentials("no url here"), "no url here");
        assert_eq!(without_url_credentials("a@b://"), "a@b://");
    }
}
