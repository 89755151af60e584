//! The `kubernetes/*` capabilities: reads of the kinds policies declared in their
//! `contextAwareResources`, served from watch-backed caches (kube-runtime reflectors, one per
//! kind, started with the server or when a reloaded configuration first needs the kind), and
//! `can_i` through SubjectAccessReviews.
//!
//! Cached objects lose `metadata.managedFields` and the last-applied annotation, which are
//! most of a typical object's size and which policies do not read. `get_resource` with
//! `disable_cache` and `can_i` go to the API server; `can_i` answers are kept 5 s.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Scope};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use policy_evaluator::host::KindObjects;
use serde::Deserialize;
use serde_json::{Value, json};

use super::query::{FieldSelector, apply_field_masks, labels_match, parse_label_selector};

/// How long a `can_i` answer is reused.
const CAN_I_TTL: Duration = Duration::from_secs(5);

/// A kind as policies name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
pub struct KindRef {
    pub api_version: String,
    pub kind: String,
}

impl std::fmt::Display for KindRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.api_version, self.kind)
    }
}

/// The watch cache of one kind.
struct KindCache {
    resource: ApiResource,
    namespaced: bool,
    store: Store<DynamicObject>,
    /// Set once the store holds its first full list. Waited on instead of kube-runtime's
    /// `Store::wait_until_ready`, which wakes only the last of several tasks waiting at once
    /// (one waker for all clones of a store, in kube-runtime 5).
    listed: tokio::sync::watch::Receiver<bool>,
}

/// Kubernetes state for policies: caches of the granted kinds and a client for the rest.
pub struct KubernetesContext {
    client: kube::Client,
    /// Caches are only ever added: a kind no policy reads any more keeps its (small) cache
    /// rather than racing evaluations still reading it.
    caches: RwLock<HashMap<KindRef, Arc<KindCache>>>,
    can_i_answers: Mutex<HashMap<String, (Instant, Vec<u8>)>>,
}

impl std::fmt::Debug for KubernetesContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesContext")
            .field("kinds", &self.caches().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn strip_bulk(object: &mut DynamicObject) {
    object.metadata.managed_fields = None;
    if let Some(annotations) = object.metadata.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// The Kubernetes context (its watch caches) cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("no Kubernetes configuration")]
    NoConfiguration(#[source] kube::Error),
    #[error("cannot find {kind} in the API server")]
    UnknownKind {
        kind: KindRef,
        #[source]
        source: kube::Error,
    },
    #[error("the caches of {} are not filled after {timeout:?}", pending.join(", "))]
    NotFilled {
        pending: Vec<String>,
        timeout: Duration,
    },
}

impl KubernetesContext {
    /// Resolves each kind with the API server's discovery and starts its watch cache (on the
    /// current tokio runtime).
    pub async fn start(
        client: kube::Client,
        kinds: &BTreeSet<KindRef>,
    ) -> Result<Self, ContextError> {
        let context = KubernetesContext {
            client,
            caches: RwLock::new(HashMap::new()),
            can_i_answers: Mutex::new(HashMap::new()),
        };
        context.watch(kinds).await?;
        Ok(context)
    }

    fn caches(&self) -> std::sync::RwLockReadGuard<'_, HashMap<KindRef, Arc<KindCache>>> {
        // Only inserts happen under the write lock: a poisoned map is still consistent.
        self.caches.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the watch caches of the `kinds` not cached yet, and says how many; the kinds
    /// before the first that cannot be resolved keep theirs.
    pub async fn watch(&self, kinds: &BTreeSet<KindRef>) -> Result<usize, ContextError> {
        let missing: Vec<KindRef> = {
            let caches = self.caches();
            kinds
                .iter()
                .filter(|kind| !caches.contains_key(*kind))
                .cloned()
                .collect()
        };
        for kind in &missing {
            let cache = self.start_cache(kind).await?;
            self.caches
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(kind.clone(), Arc::new(cache));
        }
        Ok(missing.len())
    }

    async fn start_cache(&self, kind: &KindRef) -> Result<KindCache, ContextError> {
        let (group, version) = match kind.api_version.split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", kind.api_version.as_str()),
        };
        let gvk = GroupVersionKind::gvk(group, version, &kind.kind);
        let (resource, capabilities) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|source| ContextError::UnknownKind {
                kind: kind.clone(),
                source,
            })?;
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
        let writer = reflector::store::Writer::new(resource.clone());
        let store = writer.as_reader();
        let label = kind.to_string();
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(strip_bulk)
            .reflect(writer);
        let (listed_sender, listed) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => {
                        listed_sender.send_replace(true);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(kind = %label, %error, "watching for the context cache failed; retrying");
                    }
                }
            }
        });
        Ok(KindCache {
            resource,
            namespaced: capabilities.scope == Scope::Namespaced,
            store,
            listed,
        })
    }

    /// Waits until every cache holds its initial list, at most `timeout`; names the kinds
    /// still loading otherwise.
    pub async fn wait_until_ready(&self, timeout: Duration) -> Result<(), ContextError> {
        let caches: Vec<(KindRef, Arc<KindCache>)> = self
            .caches()
            .iter()
            .map(|(kind, cache)| (kind.clone(), cache.clone()))
            .collect();
        let waits = caches.iter().map(|(_, cache)| async {
            // Fails only when the watch task ended, which it does not while the runtime runs.
            let _ = cache.listed.clone().wait_for(|listed| *listed).await;
        });
        match tokio::time::timeout(timeout, futures::future::join_all(waits)).await {
            Ok(_) => Ok(()),
            Err(_) => {
                let pending = caches
                    .iter()
                    .filter(|(_, cache)| !*cache.listed.borrow())
                    .map(|(kind, _)| kind.to_string())
                    .collect();
                Err(ContextError::NotFilled { pending, timeout })
            }
        }
    }

    /// Objects cached in total (for logs and benchmarks).
    pub fn cached_objects(&self) -> usize {
        self.caches().values().map(|cache| cache.store.len()).sum()
    }

    fn cache(&self, kind: &KindRef) -> Result<Arc<KindCache>, String> {
        self.caches().get(kind).cloned().ok_or_else(|| {
            format!("{kind} is not watched by this policy-server (no policy declares it)")
        })
    }

    /// `list_resources_by_namespace` (with a namespace) and `list_resources_all`.
    pub fn list(&self, query: &ListQuery, namespace: Option<&str>) -> Result<Value, String> {
        let kind = query.kind_ref();
        let cache = self.cache(&kind)?;
        if namespace.is_some() && !cache.namespaced {
            return Err(format!("{kind} is not namespaced"));
        }
        let labels = parse_label_selector(query.label_selector.as_deref().unwrap_or_default())?;
        let fields = FieldSelector::parse(query.field_selector.as_deref().unwrap_or_default())?;
        // Cheap checks on the typed object first: only matches are turned into JSON.
        let mut matches = Vec::new();
        for object in cache.store.state() {
            if namespace.is_some_and(|ns| object.metadata.namespace.as_deref() != Some(ns))
                || !labels_match(&labels, object.metadata.labels.as_ref())
            {
                continue;
            }
            let value = object_json(&object, &cache.resource)?;
            if fields.matches(&value) {
                let key = (
                    object.metadata.namespace.clone().unwrap_or_default(),
                    object.metadata.name.clone().unwrap_or_default(),
                );
                matches.push((key, apply_field_masks(&value, &query.field_masks)));
            }
        }
        matches.sort_by(|a, b| a.0.cmp(&b.0));
        let items: Vec<Value> = matches.into_iter().map(|(_, item)| item).collect();
        Ok(json!({
            "apiVersion": query.api_version,
            "kind": format!("{}List", query.kind),
            "metadata": {},
            "items": items,
        }))
    }

    /// Every cached object of `kind`, for Rego policies' context data.
    pub fn objects(&self, kind: &KindRef) -> Result<KindObjects, String> {
        let cache = self.cache(kind)?;
        let objects = cache
            .store
            .state()
            .iter()
            .map(|object| object_json(object, &cache.resource))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KindObjects {
            api_version: kind.api_version.clone(),
            kind: kind.kind.clone(),
            plural: cache.resource.plural.clone(),
            namespaced: cache.namespaced,
            objects,
        })
    }

    /// `get_resource`: from the cache, or from the API server with `disable_cache`.
    pub async fn get(&self, query: &GetQuery) -> Result<Value, String> {
        let kind = KindRef {
            api_version: query.api_version.clone(),
            kind: query.kind.clone(),
        };
        let cache = self.cache(&kind)?;
        let namespace = query.namespace.as_deref().filter(|ns| !ns.is_empty());
        let value = if query.disable_cache {
            let api: Api<DynamicObject> = match namespace {
                Some(ns) if cache.namespaced => {
                    Api::namespaced_with(self.client.clone(), ns, &cache.resource)
                }
                _ => Api::all_with(self.client.clone(), &cache.resource),
            };
            let mut object = api
                .get(&query.name)
                .await
                .map_err(|e| format!("cannot get {kind} {}: {e}", query.name))?;
            strip_bulk(&mut object);
            object_json(&object, &cache.resource)?
        } else {
            let mut key = ObjectRef::new_with(&query.name, cache.resource.clone());
            if let Some(ns) = namespace.filter(|_| cache.namespaced) {
                key = key.within(ns);
            }
            let object = cache.store.get(&key).ok_or_else(|| {
                format!(
                    "{kind} {}{} not found",
                    namespace.map(|ns| format!("{ns}/")).unwrap_or_default(),
                    query.name
                )
            })?;
            object_json(&object, &cache.resource)?
        };
        Ok(apply_field_masks(&value, &query.field_masks))
    }

    /// `can_i`: a SubjectAccessReview, answered with its status.
    pub async fn can_i(&self, query: &CanIQuery) -> Result<Vec<u8>, String> {
        let key = serde_json::to_string(&query.subject_access_review).unwrap_or_default();
        if !query.disable_cache {
            let answers = self
                .can_i_answers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some((at, answer)) = answers.get(&key)
                && at.elapsed() < CAN_I_TTL
            {
                return Ok(answer.clone());
            }
        }
        let review = &query.subject_access_review;
        let attributes = &review.resource_attributes;
        let request = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(review.user.clone()),
                groups: review.groups.clone(),
                resource_attributes: Some(ResourceAttributes {
                    namespace: attributes.namespace.clone(),
                    verb: Some(attributes.verb.clone()),
                    group: attributes.group.clone(),
                    resource: Some(attributes.resource.clone()),
                    subresource: attributes.subresource.clone(),
                    name: attributes.name.clone(),
                    version: attributes.version.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let created = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &request)
            .await
            .map_err(|e| format!("the SubjectAccessReview failed: {e}"))?;
        let answer =
            serde_json::to_vec(&created.status.unwrap_or_default()).map_err(|e| e.to_string())?;
        let mut answers = self
            .can_i_answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        answers.retain(|_, (at, _)| at.elapsed() < CAN_I_TTL);
        answers.insert(key, (Instant::now(), answer.clone()));
        Ok(answer)
    }
}

/// A cached object as JSON, with the `apiVersion` and `kind` watch events may leave out.
fn object_json(object: &DynamicObject, resource: &ApiResource) -> Result<Value, String> {
    let mut value = serde_json::to_value(object).map_err(|e| e.to_string())?;
    if let Value::Object(map) = &mut value {
        map.insert(
            "apiVersion".into(),
            Value::String(resource.api_version.clone()),
        );
        map.insert("kind".into(), Value::String(resource.kind.clone()));
    }
    Ok(value)
}

/// Payload of `list_resources_by_namespace` and `list_resources_all`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub label_selector: Option<String>,
    #[serde(default)]
    pub field_selector: Option<String>,
    #[serde(default)]
    pub field_masks: Vec<String>,
}

impl ListQuery {
    pub fn kind_ref(&self) -> KindRef {
        KindRef {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
        }
    }
}

/// Payload of `get_resource`.
#[derive(Debug, Deserialize)]
pub struct GetQuery {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub disable_cache: bool,
    #[serde(default)]
    pub field_masks: Vec<String>,
}

/// Payload of `can_i`.
#[derive(Debug, Deserialize)]
pub struct CanIQuery {
    pub subject_access_review: ReviewRequest,
    #[serde(default)]
    pub disable_cache: bool,
}

#[derive(Debug, Deserialize, serde::Serialize)]
pub struct ReviewRequest {
    pub user: String,
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    pub resource_attributes: ReviewAttributes,
}

#[derive(Debug, Deserialize, serde::Serialize)]
pub struct ReviewAttributes {
    #[serde(default)]
    pub namespace: Option<String>,
    pub verb: String,
    #[serde(default)]
    pub group: Option<String>,
    pub resource: String,
    #[serde(default)]
    pub subresource: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
}

/// Shared handle.
pub type SharedContext = Arc<KubernetesContext>;
