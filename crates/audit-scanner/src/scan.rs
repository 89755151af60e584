//! The scan: which namespaces, which resources, in what parallelism; every resource audited
//! by the policies that apply to it and reported; then the previous run's reports removed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

use api_types::crd::{
    AdmissionPolicy, AdmissionPolicyGroup, ClusterAdmissionPolicy, ClusterAdmissionPolicyGroup,
};
use api_types::naming::labels;
use api_types::reports::{ResultTimestamp, openreports, wgpolicy};
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::{self, Scope as DiscoveryScope};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::{PolicyServerClient, audit_review};
use crate::policies::{AuditPolicy, Target};
use crate::report::{self, AuditedResource, PolicyResult, Report, ReportKind};

/// Field manager of the reports.
pub const FIELD_MANAGER: &str = "kubewarden-audit-scanner";

/// What to scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Cluster-scoped resources, then every namespace but the ignored ones.
    Everything,
    Namespace(String),
    /// Cluster-scoped resources only.
    Cluster,
}

#[derive(Debug, Clone)]
pub struct ScanOptions {
    pub scope: Scope,
    pub kubewarden_namespace: String,
    pub ignore_namespaces: Vec<String>,
    pub parallel_namespaces: usize,
    pub parallel_resources: usize,
    pub parallel_policies: usize,
    pub page_size: u32,
    pub report_kind: ReportKind,
    /// Write reports to the cluster (`--disable-store` turns it off).
    pub store: bool,
    /// Print every report as a JSON line on stdout (`--output-scan`).
    pub output: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
}

fn kube_error(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ScanError {
    let action = action.into();
    move |source| ScanError::Kube { action, source }
}

/// Counts of one scan.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanSummary {
    pub namespaces: usize,
    pub resources: usize,
    pub reports: usize,
    /// Results that are `error` (the policy could not be evaluated).
    pub evaluation_errors: usize,
    /// Parts of the scan that could not run (a namespace whose resources could not be listed, a
    /// report that could not be written...). Empty when the scan completed.
    pub failures: Vec<String>,
}

impl ScanSummary {
    fn add(&mut self, other: ScanSummary) {
        self.namespaces += other.namespaces;
        self.resources += other.resources;
        self.reports += other.reports;
        self.evaluation_errors += other.evaluation_errors;
        self.failures.extend(other.failures);
    }
}

/// How a rule's resource is served by the cluster.
#[derive(Debug, Clone)]
struct Resolved {
    api_resource: ApiResource,
    namespaced: bool,
}

pub struct Scanner {
    client: Client,
    policy_servers: PolicyServerClient,
    options: ScanOptions,
    run_uid: String,
    resolved: Mutex<HashMap<Target, Option<Resolved>>>,
    reported_unresolvable: Mutex<HashSet<Target>>,
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner")
            .field("options", &self.options)
            .field("run_uid", &self.run_uid)
            .finish_non_exhaustive()
    }
}

/// A random identifier for this run (labels of its reports).
fn new_run_uid() -> String {
    let random = || {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    format!("{:016x}{:016x}", random(), random())
}

fn now() -> ResultTimestamp {
    let now = jiff::Timestamp::now();
    ResultTimestamp {
        seconds: now.as_second(),
        nanos: now.subsec_nanosecond(),
    }
}

impl Scanner {
    pub fn new(client: Client, policy_servers: PolicyServerClient, options: ScanOptions) -> Self {
        Scanner {
            client,
            policy_servers,
            options,
            run_uid: new_run_uid(),
            resolved: Mutex::new(HashMap::new()),
            reported_unresolvable: Mutex::new(HashSet::new()),
        }
    }

    pub fn run_uid(&self) -> &str {
        &self.run_uid
    }

    /// Runs the scan. Policy-server failures become `error` results; only a failure to list
    /// policies or namespaces ends it early.
    pub async fn run(&self) -> Result<ScanSummary, ScanError> {
        let policies = self.audited_policies().await?;
        tracing::info!(run = %self.run_uid, policies = policies.len(), "scan started");
        if self.options.report_kind == ReportKind::Openreports && self.options.store {
            self.delete_legacy_reports().await;
        }
        let mut summary = ScanSummary::default();
        if matches!(self.options.scope, Scope::Everything | Scope::Cluster) {
            summary.add(self.scan_cluster(&policies).await);
        }
        let namespaces = match &self.options.scope {
            Scope::Cluster => Vec::new(),
            Scope::Namespace(name) => {
                let api: Api<Namespace> = Api::all(self.client.clone());
                vec![
                    api.get(name)
                        .await
                        .map_err(kube_error(format!("reading namespace {name}")))?,
                ]
            }
            Scope::Everything => {
                let api: Api<Namespace> = Api::all(self.client.clone());
                api.list(&ListParams::default())
                    .await
                    .map_err(kube_error("listing namespaces"))?
                    .items
                    .into_iter()
                    .filter(|ns| {
                        let name = ns.name_any();
                        name != self.options.kubewarden_namespace
                            && !self.options.ignore_namespaces.contains(&name)
                    })
                    .collect()
            }
        };
        let per_namespace: Vec<ScanSummary> = stream::iter(namespaces)
            .map(|namespace| self.scan_namespace(namespace, &policies))
            .buffer_unordered(self.options.parallel_namespaces.max(1))
            .collect()
            .await;
        for namespace in per_namespace {
            summary.add(namespace);
        }
        tracing::info!(
            run = %self.run_uid,
            namespaces = summary.namespaces,
            resources = summary.resources,
            reports = summary.reports,
            evaluation_errors = summary.evaluation_errors,
            failures = summary.failures.len(),
            "scan finished"
        );
        Ok(summary)
    }

    async fn list_all<K>(&self) -> Result<Vec<K>, ScanError>
    where
        K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let api: Api<K> = Api::all(self.client.clone());
        Ok(api
            .list(&ListParams::default())
            .await
            .map_err(kube_error(format!("listing {}", K::plural(&()))))?
            .items)
    }

    /// Every policy that can be audited.
    async fn audited_policies(&self) -> Result<Vec<AuditPolicy>, ScanError> {
        let mut all = Vec::new();
        all.extend(
            self.list_all::<ClusterAdmissionPolicy>()
                .await?
                .iter()
                .map(AuditPolicy::from_cluster_admission_policy),
        );
        all.extend(
            self.list_all::<AdmissionPolicy>()
                .await?
                .iter()
                .map(AuditPolicy::from_admission_policy),
        );
        all.extend(
            self.list_all::<ClusterAdmissionPolicyGroup>()
                .await?
                .iter()
                .map(AuditPolicy::from_cluster_admission_policy_group),
        );
        all.extend(
            self.list_all::<AdmissionPolicyGroup>()
                .await?
                .iter()
                .map(AuditPolicy::from_admission_policy_group),
        );
        Ok(all
            .into_iter()
            .filter(|p| match p.skip_reason() {
                None => true,
                Some(reason) => {
                    tracing::debug!(policy = %p.unique_name, ?reason, "not audited");
                    false
                }
            })
            .collect())
    }

    async fn resolve(&self, target: &Target) -> Option<Resolved> {
        if let Some(known) = self
            .resolved
            .lock()
            .ok()
            .and_then(|m| m.get(target).cloned())
        {
            return known;
        }
        let gv = kube::core::GroupVersion::gv(&target.group, &target.version);
        let found = match discovery::pinned_group(&self.client, &gv).await {
            Ok(group) => group
                .versioned_resources(&target.version)
                .into_iter()
                .find(|(ar, _)| ar.plural == target.resource)
                .map(|(api_resource, caps)| Resolved {
                    api_resource,
                    namespaced: caps.scope == DiscoveryScope::Namespaced,
                }),
            Err(err) => {
                tracing::debug!(%target, error = %err, "discovery failed");
                None
            }
        };
        if found.is_none()
            && self
                .reported_unresolvable
                .lock()
                .is_ok_and(|mut reported| reported.insert(target.clone()))
        {
            tracing::warn!(%target, "the cluster does not serve this resource; skipped");
        }
        if let Ok(mut cache) = self.resolved.lock() {
            cache.insert(target.clone(), found.clone());
        }
        found
    }

    /// The targets of `policies`, resolved, with the policies naming each, keeping only
    /// namespaced or only cluster-scoped resources.
    async fn targets<'p>(
        &self,
        policies: &[&'p AuditPolicy],
        namespaced: bool,
    ) -> Vec<(Resolved, Vec<&'p AuditPolicy>)> {
        let mut by_target: BTreeMap<Target, Vec<&AuditPolicy>> = BTreeMap::new();
        for policy in policies {
            for target in policy.targets() {
                by_target.entry(target).or_default().push(policy);
            }
        }
        let mut result = Vec::new();
        for (target, policies) in by_target {
            if let Some(resolved) = self.resolve(&target).await
                && resolved.namespaced == namespaced
            {
                result.push((resolved, policies));
            }
        }
        result
    }

    async fn scan_cluster(&self, policies: &[AuditPolicy]) -> ScanSummary {
        let cluster_wide: Vec<&AuditPolicy> =
            policies.iter().filter(|p| p.is_cluster_wide()).collect();
        let mut summary = ScanSummary::default();
        for (resolved, policies) in self.targets(&cluster_wide, false).await {
            let api: Api<DynamicObject> =
                Api::all_with(self.client.clone(), &resolved.api_resource);
            summary.add(self.scan_resources(&api, &resolved, &policies).await);
        }
        self.finish_scope(None, &mut summary).await;
        tracing::info!(
            resources = summary.resources,
            reports = summary.reports,
            "cluster-scoped resources scanned"
        );
        summary
    }

    async fn scan_namespace(&self, namespace: Namespace, policies: &[AuditPolicy]) -> ScanSummary {
        let name = namespace.name_any();
        let labels = namespace.labels().clone();
        let applicable: Vec<&AuditPolicy> = policies
            .iter()
            .filter(|p| p.applies_to_namespace(&name, &labels))
            .collect();
        let mut summary = ScanSummary {
            namespaces: 1,
            ..ScanSummary::default()
        };
        for (resolved, policies) in self.targets(&applicable, true).await {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &name, &resolved.api_resource);
            summary.add(self.scan_resources(&api, &resolved, &policies).await);
        }
        self.finish_scope(Some(&name), &mut summary).await;
        tracing::info!(
            namespace = %name,
            policies = applicable.len(),
            resources = summary.resources,
            reports = summary.reports,
            evaluation_errors = summary.evaluation_errors,
            "namespace scanned"
        );
        summary
    }

    /// Deletes the reports of earlier runs in the scope, once this run's are written; skipped
    /// when something failed, so that no resource loses its last report to a partial scan.
    async fn finish_scope(&self, namespace: Option<&str>, summary: &mut ScanSummary) {
        if !self.options.store || !summary.failures.is_empty() {
            return;
        }
        let selector = format!(
            "{}={},{}!={}",
            labels::MANAGED_BY,
            labels::REPORT_MANAGED_BY_VALUE,
            labels::AUDIT_RUN_UID,
            self.run_uid
        );
        let result = match self.options.report_kind {
            ReportKind::Openreports => {
                self.delete_reports::<openreports::Report, openreports::ClusterReport>(
                    namespace, &selector,
                )
                .await
            }
            ReportKind::Policyreport => {
                self.delete_reports::<wgpolicy::PolicyReport, wgpolicy::ClusterPolicyReport>(
                    namespace, &selector,
                )
                .await
            }
        };
        if let Err(err) = result {
            summary
                .failures
                .push(format!("deleting earlier reports: {err}"));
        }
    }

    async fn delete_reports<N, C>(
        &self,
        namespace: Option<&str>,
        selector: &str,
    ) -> Result<(), kube::Error>
    where
        N: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        C: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let list = ListParams::default().labels(selector);
        let params = DeleteParams::background();
        match namespace {
            Some(namespace) => {
                let api: Api<N> = Api::namespaced(self.client.clone(), namespace);
                api.delete_collection(&params, &list).await.map(|_| ())
            }
            None => {
                let api: Api<C> = Api::all(self.client.clone());
                api.delete_collection(&params, &list).await.map(|_| ())
            }
        }
    }

    /// Removes wgpolicyk8s reports left by earlier runs in that format (where the CRDs exist).
    async fn delete_legacy_reports(&self) {
        let selector = format!("{}={}", labels::MANAGED_BY, labels::REPORT_MANAGED_BY_VALUE);
        let list = ListParams::default().labels(&selector);
        let namespaced: Api<wgpolicy::PolicyReport> = Api::all(self.client.clone());
        if let Ok(reports) = namespaced.list(&list).await {
            for report in reports.items {
                if let Some(ns) = report.namespace() {
                    let api: Api<wgpolicy::PolicyReport> =
                        Api::namespaced(self.client.clone(), &ns);
                    let _ = api
                        .delete(&report.name_any(), &DeleteParams::background())
                        .await;
                }
            }
        }
        let cluster: Api<wgpolicy::ClusterPolicyReport> = Api::all(self.client.clone());
        let _ = cluster
            .delete_collection(&DeleteParams::background(), &list)
            .await;
    }

    /// Lists `api` page by page and audits every object.
    async fn scan_resources(
        &self,
        api: &Api<DynamicObject>,
        resolved: &Resolved,
        policies: &[&AuditPolicy],
    ) -> ScanSummary {
        let mut summary = ScanSummary::default();
        let mut token: Option<String> = None;
        loop {
            let mut params = ListParams::default().limit(self.options.page_size.max(1));
            if let Some(token) = &token {
                params = params.continue_token(token);
            }
            let page = match api.list(&params).await {
                Ok(page) => page,
                Err(err) => {
                    summary
                        .failures
                        .push(format!("listing {}: {err}", resolved.api_resource.plural));
                    return summary;
                }
            };
            let outcomes: Vec<ScanSummary> = stream::iter(page.items)
                .map(|object| self.audit_object(object, resolved, policies))
                .buffer_unordered(self.options.parallel_resources.max(1))
                .collect()
                .await;
            for outcome in outcomes {
                summary.add(outcome);
            }
            token = page.metadata.continue_.filter(|t| !t.is_empty());
            if token.is_none() {
                return summary;
            }
        }
    }

    async fn audit_object(
        &self,
        object: DynamicObject,
        resolved: &Resolved,
        policies: &[&AuditPolicy],
    ) -> ScanSummary {
        let mut summary = ScanSummary::default();
        let labels = object.labels().clone();
        let (applicable, skipped): (Vec<&AuditPolicy>, Vec<&AuditPolicy>) = policies
            .iter()
            .copied()
            .partition(|p| p.applies_to_object(&labels));
        if applicable.is_empty() {
            return summary;
        }
        let ar = &resolved.api_resource;
        let resource = AuditedResource {
            api_version: ar.api_version.clone(),
            kind: ar.kind.clone(),
            name: object.name_any(),
            namespace: object.namespace(),
            uid: object.uid().unwrap_or_default(),
            resource_version: object.resource_version().unwrap_or_default(),
        };
        let mut json = serde_json::to_value(&object).unwrap_or_default();
        json["apiVersion"] = ar.api_version.clone().into();
        json["kind"] = ar.kind.clone().into();
        let review = audit_review(
            &resource.uid,
            &ar.group,
            &ar.version,
            &ar.kind,
            &ar.plural,
            &json,
        );
        let results: Vec<PolicyResult> = stream::iter(applicable)
            .map(|policy| {
                let review = &review;
                async move {
                    let verdict = self
                        .policy_servers
                        .evaluate(&policy.policy_server, &policy.unique_name, review)
                        .await;
                    PolicyResult {
                        policy: policy.clone(),
                        verdict,
                        timestamp: now(),
                    }
                }
            })
            .buffered(self.options.parallel_policies.max(1))
            .collect()
            .await;
        summary.resources = 1;
        summary.evaluation_errors = results
            .iter()
            .filter(|r| matches!(r.verdict, report::Verdict::Error(_)))
            .count();
        let skipped = i32::try_from(skipped.len()).unwrap_or(i32::MAX);
        let report = report::build(
            self.options.report_kind,
            &resource,
            &results,
            skipped,
            &self.run_uid,
        );
        if self.options.output {
            println!("{}", report.to_json());
        }
        if self.options.store {
            match self.store(&report).await {
                Ok(()) => summary.reports = 1,
                Err(err) => summary.failures.push(format!(
                    "writing the report of {} {}: {err}",
                    resource.kind, resource.name
                )),
            }
        }
        summary
    }

    async fn store(&self, report: &Report) -> Result<(), kube::Error> {
        match report {
            Report::Report(r) => self.apply_namespaced(r).await,
            Report::PolicyReport(r) => self.apply_namespaced(r).await,
            Report::ClusterReport(r) => self.apply(&Api::all(self.client.clone()), r).await,
            Report::ClusterPolicyReport(r) => self.apply(&Api::all(self.client.clone()), r).await,
        }
    }

    async fn apply_namespaced<K>(&self, report: &K) -> Result<(), kube::Error>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + Serialize
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let namespace = report.namespace().unwrap_or_default();
        self.apply(&Api::namespaced(self.client.clone(), &namespace), report)
            .await
    }

    async fn apply<K>(&self, api: &Api<K>, report: &K) -> Result<(), kube::Error>
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + Serialize
            + DeserializeOwned
            + std::fmt::Debug,
    {
        api.patch(
            &report.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(report),
        )
        .await
        .map(|_| ())
    }
}
