//! One watch per kind for all controllers: each kind is listed and watched once, kept in a
//! store that reconcilers read instead of asking the API server, and fanned out to every
//! controller it triggers (kube-runtime's `Controller::for_stream` and `watches_stream`).
//!
//! Before: every controller watched what it needed, 35 watches for five controllers, with
//! Pods, ConfigMaps and PolicyServers watched five times each; reconcilers then read the same
//! objects again with GET and LIST. Now: 13 watches, and reconcilers read PolicyServers,
//! policies, ConfigMaps, Deployments and Pods from the stores.
//!
//! The fan-out is ours rather than kube-runtime's shared-store subscriptions because those
//! (kube-runtime 5) pass on applied objects only: a deleted Deployment or webhook
//! configuration would then not bring its owner to reconcile and recreate it.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::{Mutex, PoisonError};

use api_types::crd::{
    AdmissionPolicy, AdmissionPolicyGroup, ClusterAdmissionPolicy, ClusterAdmissionPolicyGroup,
    PolicyServer,
};
use api_types::naming::labels;
use futures::{Stream, StreamExt};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::backoff::watch_backoff;
use crate::error::Error;

/// Objects a subscriber may fall behind by before the watch waits for it.
const SUBSCRIBER_BUFFER: usize = 256;

/// One shared watch: its store, the writer that feeds it, and its subscribers.
pub struct Shared<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    writer: Writer<K>,
    subscribers: Mutex<Vec<mpsc::Sender<K>>>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Debug for Shared<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("kind", &K::kind(&()))
            .finish_non_exhaustive()
    }
}

impl<K> Shared<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    fn new() -> Self {
        let (store, writer) = reflector::store();
        Shared {
            store,
            writer,
            subscribers: Mutex::new(Vec::new()),
        }
    }

    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Every object the watch applies or deletes, once the store holds it (or no longer
    /// does), for a controller to react to. Each subscriber must be polled (controllers poll
    /// their triggers all the time), or the watch waits for it.
    pub fn subscribe(&self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(sender);
        futures::stream::unfold(receiver, |mut receiver| async move {
            let object = receiver.recv().await?;
            Some((Ok(object), receiver))
        })
    }

    /// Lists and watches `api`, feeding the store and the subscribers, until the stream ends.
    async fn run(self, api: Api<K>, config: watcher::Config) {
        let kind = K::kind(&()).to_string();
        let subscribers = self
            .subscribers
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let subscribers = &subscribers;
        let kind = &kind;
        watcher(api, config)
            .backoff(watch_backoff())
            .reflect(self.writer)
            .touched_objects()
            .for_each(|touched| async move {
                match touched {
                    Ok(object) => {
                        for subscriber in subscribers {
                            // A subscriber gone means its controller stopped; the others go on.
                            let _ = subscriber.send(object.clone()).await;
                        }
                    }
                    Err(error) => tracing::warn!(%kind, %error, "shared watch failed; retrying"),
                }
            })
            .await;
    }
}

/// The stores of the shared watches, for reconcilers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Stores {
    /// Pods labelled with their PolicyServer, in the deployments namespace.
    pub pods: Store<Pod>,
    /// ConfigMaps labelled with their PolicyServer, in the deployments namespace.
    pub config_maps: Store<ConfigMap>,
    /// Deployments labelled with their PolicyServer, in the deployments namespace.
    pub deployments: Store<Deployment>,
    pub policy_servers: Store<PolicyServer>,
    pub cluster_admission_policies: Store<ClusterAdmissionPolicy>,
    pub admission_policies: Store<AdmissionPolicy>,
    pub cluster_admission_policy_groups: Store<ClusterAdmissionPolicyGroup>,
    pub admission_policy_groups: Store<AdmissionPolicyGroup>,
}

impl Stores {
    /// The pods of PolicyServer `policy_server` (by their label), as the store holds them.
    pub fn pods_of(&self, policy_server: &str) -> Vec<Arc<Pod>> {
        self.pods
            .state()
            .into_iter()
            .filter(|pod| {
                pod.labels().get(labels::POLICY_SERVER).map(String::as_str) == Some(policy_server)
            })
            .collect()
    }
}

/// Waits until `store` holds its first full list: a reconciler reading an empty store would
/// take "not listed yet" for "absent".
pub async fn ready<K>(store: &Store<K>) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .wait_until_ready()
        .await
        .map_err(|_| Error::WatchStopped(K::kind(&()).to_string()))
}

/// Every shared watch, before it runs.
#[derive(Debug)]
pub struct SharedWatches {
    pub pods: Shared<Pod>,
    pub config_maps: Shared<ConfigMap>,
    pub deployments: Shared<Deployment>,
    pub policy_servers: Shared<PolicyServer>,
    pub cluster_admission_policies: Shared<ClusterAdmissionPolicy>,
    pub admission_policies: Shared<AdmissionPolicy>,
    pub cluster_admission_policy_groups: Shared<ClusterAdmissionPolicyGroup>,
    pub admission_policy_groups: Shared<AdmissionPolicyGroup>,
    /// The webhook configurations the controller generated (label `app.kubernetes.io/part-of`).
    pub validating_webhooks: Shared<ValidatingWebhookConfiguration>,
    pub mutating_webhooks: Shared<MutatingWebhookConfiguration>,
}

impl Default for SharedWatches {
    fn default() -> Self {
        SharedWatches {
            pods: Shared::new(),
            config_maps: Shared::new(),
            deployments: Shared::new(),
            policy_servers: Shared::new(),
            cluster_admission_policies: Shared::new(),
            admission_policies: Shared::new(),
            cluster_admission_policy_groups: Shared::new(),
            admission_policy_groups: Shared::new(),
            validating_webhooks: Shared::new(),
            mutating_webhooks: Shared::new(),
        }
    }
}

impl SharedWatches {
    pub fn stores(&self) -> Stores {
        Stores {
            pods: self.pods.store(),
            config_maps: self.config_maps.store(),
            deployments: self.deployments.store(),
            policy_servers: self.policy_servers.store(),
            cluster_admission_policies: self.cluster_admission_policies.store(),
            admission_policies: self.admission_policies.store(),
            cluster_admission_policy_groups: self.cluster_admission_policy_groups.store(),
            admission_policy_groups: self.admission_policy_groups.store(),
        }
    }

    /// Runs every watch until they end. Subscribe first: a subscription taken after this
    /// started misses what was already applied.
    pub async fn run(self, client: Client, namespace: &str) {
        let labelled = watcher::Config::default().labels(labels::POLICY_SERVER);
        let generated = watcher::Config::default().labels(&format!(
            "{}={}",
            labels::PART_OF,
            labels::PART_OF_KUBEWARDEN
        ));
        let all = watcher::Config::default;
        let c = &client;
        futures::join!(
            self.pods
                .run(Api::namespaced(c.clone(), namespace), labelled.clone()),
            self.config_maps
                .run(Api::namespaced(c.clone(), namespace), labelled.clone()),
            self.deployments
                .run(Api::namespaced(c.clone(), namespace), labelled),
            self.policy_servers.run(Api::all(c.clone()), all()),
            self.cluster_admission_policies
                .run(Api::all(c.clone()), all()),
            self.admission_policies.run(Api::all(c.clone()), all()),
            self.cluster_admission_policy_groups
                .run(Api::all(c.clone()), all()),
            self.admission_policy_groups.run(Api::all(c.clone()), all()),
            self.validating_webhooks
                .run(Api::all(c.clone()), generated.clone()),
            self.mutating_webhooks.run(Api::all(c.clone()), generated),
        );
    }
}
