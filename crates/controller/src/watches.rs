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
//!
//! Reconcilers wait for a store's first list through [`Cache::listed`], never through
//! kube-runtime's `Store::wait_until_ready`: that one keeps a single waker (a
//! `futures::channel::oneshot` receiver shared by every clone of the store), so when several
//! tasks wait on it at once, only the last one to poll is woken. With shared stores the
//! controller's own runner waits on its main store while other controllers' reconcilers wait on
//! it too, and a controller that started on a busy cluster could then never reconcile at all.

use std::collections::HashSet;
use std::fmt::Debug;
use std::pin::pin;
use std::sync::Arc;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

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
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};

use crate::backoff::watch_backoff;
use crate::error::Error;

/// Objects a subscriber may fall behind by before the watch waits for it.
const SUBSCRIBER_BUFFER: usize = 256;

/// How long a reconciler waits for a watch's first list before failing (and being retried
/// with its backoff, with a Warning event): a watch that cannot list (no RBAC for the kind, a
/// CRD not installed) should say so, not hold reconciles without a word.
const LIST_WAIT: Duration = Duration::from_secs(30);

/// One shared watch: its store, the writer that feeds it, whether it has listed, and its
/// subscribers.
pub struct Shared<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    writer: Writer<K>,
    listed: watch::Sender<bool>,
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
            listed: watch::Sender::new(false),
            subscribers: Mutex::new(Vec::new()),
        }
    }

    /// The store, for the one controller whose main kind this is: its runner is then the only
    /// task waiting on the store's own readiness (see the module's doc).
    pub fn main_store(&self) -> Store<K> {
        self.store.clone()
    }

    /// The store as reconcilers read it, once listed.
    pub fn cache(&self) -> Cache<K> {
        Cache {
            store: self.store.clone(),
            listed: self.listed.subscribe(),
        }
    }

    /// Every object the watch applies or deletes, once the store holds it (or no longer
    /// does), for a controller to react to; after each full list (the first one, and relists
    /// after the watch lost its place), every listed object and every object the list no
    /// longer has. Each subscriber must be polled (controllers poll their triggers even while
    /// busy or not yet started), or the watch waits for it.
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
        self.feed(watcher(api, config).backoff(watch_backoff()))
            .await;
    }

    /// Feeds the store and the subscribers from a watch's `events`, until they end.
    async fn feed(self, events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>) {
        let Shared {
            store,
            writer,
            listed,
            subscribers,
        } = self;
        let subscribers = subscribers
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let kind = K::kind(&());
        // What the store held when a relist began: objects missing from the new list were
        // deleted while the watch was away, and whoever they trigger must hear of it.
        let mut before_list = Vec::new();
        let mut events = pin!(events.reflect(writer));
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(object) | watcher::Event::Delete(object)) => {
                    notify(&subscribers, object).await;
                }
                Ok(watcher::Event::Init) => before_list = store.state(),
                // The reflector swaps a list into the store whole, at InitDone: a controller
                // told earlier would look for the object in the store and not find it.
                Ok(watcher::Event::InitApply(_)) => {}
                Ok(watcher::Event::InitDone) => {
                    listed.send_replace(true);
                    let now = store.state();
                    let present: HashSet<ObjectRef<K>> = now
                        .iter()
                        .map(|object| ObjectRef::from_obj(&**object))
                        .collect();
                    let gone = std::mem::take(&mut before_list)
                        .into_iter()
                        .filter(|object| !present.contains(&ObjectRef::from_obj(&**object)));
                    for object in now.into_iter().chain(gone) {
                        notify(&subscribers, Arc::unwrap_or_clone(object)).await;
                    }
                }
                Err(error) => tracing::warn!(%kind, %error, "shared watch failed; retrying"),
            }
        }
    }
}

async fn notify<K: Clone>(subscribers: &[mpsc::Sender<K>], object: K) {
    for subscriber in subscribers {
        // A subscriber gone means its controller stopped; the others go on.
        let _ = subscriber.send(object.clone()).await;
    }
}

/// A shared watch's store as reconcilers read it: only once the watch has listed, since an
/// empty store would otherwise read "not listed yet" as "absent". Cheap to clone.
#[derive(Debug, Clone)]
pub struct Cache<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    listed: watch::Receiver<bool>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Cache<K> {
    /// The store, once it holds the watch's first full list. Any number of tasks may wait.
    /// Fails when the watch has not listed within [`LIST_WAIT`], or stopped.
    pub async fn listed(&self) -> Result<&Store<K>, Error> {
        self.listed_within(LIST_WAIT).await
    }

    async fn listed_within(&self, wait: Duration) -> Result<&Store<K>, Error> {
        let kind = || K::kind(&()).to_string();
        let mut listed = self.listed.clone();
        match tokio::time::timeout(wait, listed.wait_for(|listed| *listed)).await {
            Ok(Ok(_)) => Ok(&self.store),
            Ok(Err(_)) => Err(Error::WatchStopped(kind())),
            Err(_) => Err(Error::NotListed { kind: kind(), wait }),
        }
    }
}

impl Cache<Pod> {
    /// The pods of PolicyServer `policy_server` (by their label), once listed.
    pub async fn of_policy_server(&self, policy_server: &str) -> Result<Vec<Arc<Pod>>, Error> {
        let pods = self.listed().await?.state();
        Ok(pods
            .into_iter()
            .filter(|pod| {
                pod.labels().get(labels::POLICY_SERVER).map(String::as_str) == Some(policy_server)
            })
            .collect())
    }
}

/// The caches of the shared watches, for reconcilers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Stores {
    /// Pods labelled with their PolicyServer, in the deployments namespace.
    pub pods: Cache<Pod>,
    /// ConfigMaps labelled with their PolicyServer, in the deployments namespace.
    pub config_maps: Cache<ConfigMap>,
    /// Deployments labelled with their PolicyServer, in the deployments namespace.
    pub deployments: Cache<Deployment>,
    pub policy_servers: Cache<PolicyServer>,
    pub cluster_admission_policies: Cache<ClusterAdmissionPolicy>,
    pub admission_policies: Cache<AdmissionPolicy>,
    pub cluster_admission_policy_groups: Cache<ClusterAdmissionPolicyGroup>,
    pub admission_policy_groups: Cache<AdmissionPolicyGroup>,
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
            pods: self.pods.cache(),
            config_maps: self.config_maps.cache(),
            deployments: self.deployments.cache(),
            policy_servers: self.policy_servers.cache(),
            cluster_admission_policies: self.cluster_admission_policies.cache(),
            admission_policies: self.admission_policies.cache(),
            cluster_admission_policy_groups: self.cluster_admission_policy_groups.cache(),
            admission_policy_groups: self.admission_policy_groups.cache(),
        }
    }

    /// Runs every watch until they end (they retry for ever). Consumes the watches: every
    /// subscription is taken before, so none misses the first list.
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::future::join_all;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::runtime::watcher::Event;

    use super::*;

    fn config_map(name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some("kubewarden".to_string()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    /// Lets every spawned task run until it waits.
    async fn let_tasks_park() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    /// Runs `shared` on events sent to the returned sender.
    fn feed_from_channel(
        shared: Shared<ConfigMap>,
    ) -> (
        mpsc::UnboundedSender<Event<ConfigMap>>,
        tokio::task::JoinHandle<()>,
    ) {
        let (events, received) = mpsc::unbounded_channel();
        let events_stream = futures::stream::unfold(received, |mut received| async move {
            received.recv().await.map(|event| (Ok(event), received))
        });
        (events, tokio::spawn(shared.feed(events_stream)))
    }

    /// The next `count` objects' names a subscriber gets, sorted (a list comes in store
    /// order).
    async fn next_names(
        subscriber: &mut (impl Stream<Item = Result<ConfigMap, watcher::Error>> + Unpin),
        count: usize,
    ) -> Vec<String> {
        let mut names = Vec::new();
        for _ in 0..count {
            let object = subscriber.next().await.expect("open").expect("no error");
            names.push(object.name_any());
        }
        names.sort();
        names
    }

    #[tokio::test]
    async fn every_waiter_reads_the_cache_once_listed_and_subscribers_see_deletes() {
        let shared = Shared::<ConfigMap>::new();
        let mut first = Box::pin(shared.subscribe());
        let mut second = Box::pin(shared.subscribe());
        let cache = shared.cache();
        // Reconcilers of several controllers wait on the same cache, while the controller whose
        // main kind it is waits on the store's own readiness.
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.listed().await.map(|store| store.state().len()) })
            })
            .collect();
        let main_store = shared.main_store();
        let runner = tokio::spawn(async move { main_store.wait_until_ready().await });
        let (events, feed) = feed_from_channel(shared);
        let_tasks_park().await;
        assert!(
            waiters.iter().all(|waiter| !waiter.is_finished()) && !runner.is_finished(),
            "everyone waits before the list"
        );

        for event in [
            Event::Init,
            Event::InitApply(config_map("a")),
            Event::InitApply(config_map("b")),
            Event::InitDone,
        ] {
            events.send(event).expect("the feed runs");
        }
        let listed = tokio::time::timeout(Duration::from_secs(5), join_all(waiters))
            .await
            .expect("every waiter is woken");
        for sizes in listed {
            assert_eq!(sizes.expect("the waiter ran").expect("listed"), 2);
        }
        tokio::time::timeout(Duration::from_secs(5), runner)
            .await
            .expect("the runner is woken")
            .expect("the runner ran")
            .expect("ready");

        events
            .send(Event::Delete(config_map("a")))
            .expect("the feed runs");
        for subscriber in [&mut first, &mut second] {
            assert_eq!(next_names(subscriber, 2).await, ["a", "b"]);
            assert_eq!(next_names(subscriber, 1).await, ["a"]);
        }
        assert_eq!(cache.listed().await.expect("listed").state().len(), 1);

        drop(events);
        feed.await.expect("the feed ends with its events");
        assert!(cache.listed().await.is_ok(), "stays listed");
    }

    #[tokio::test]
    async fn a_relist_tells_of_every_listed_object_and_of_those_deleted_meanwhile() {
        let shared = Shared::<ConfigMap>::new();
        let mut subscriber = Box::pin(shared.subscribe());
        let store = shared.main_store();
        let (events, _feed) = feed_from_channel(shared);
        for event in [
            Event::Init,
            Event::InitApply(config_map("kept")),
            Event::InitApply(config_map("deleted-while-away")),
            Event::InitDone,
        ] {
            events.send(event).expect("the feed runs");
        }
        assert_eq!(
            next_names(&mut subscriber, 2).await,
            ["deleted-while-away", "kept"]
        );

        // The watch lost its place (410 Gone, an API server restart) and lists again.
        events.send(Event::Init).expect("the feed runs");
        events
            .send(Event::InitApply(config_map("kept")))
            .expect("the feed runs");
        events
            .send(Event::InitApply(config_map("created-while-away")))
            .expect("the feed runs");
        let_tasks_park().await;
        assert!(
            store
                .get(&ObjectRef::new("created-while-away").within("kubewarden"))
                .is_none(),
            "not in the store before the list is done"
        );
        events.send(Event::InitDone).expect("the feed runs");
        // Told only now, when the store holds it: a controller reads it there.
        assert_eq!(
            next_names(&mut subscriber, 3).await,
            ["created-while-away", "deleted-while-away", "kept"]
        );
        let mut names: Vec<_> = store.state().iter().map(|cm| cm.name_any()).collect();
        names.sort();
        assert_eq!(names, ["created-while-away", "kept"]);
    }

    #[tokio::test]
    async fn waiting_on_a_watch_that_stopped_before_listing_fails() {
        let shared = Shared::<ConfigMap>::new();
        let cache = shared.cache();
        shared.feed(futures::stream::empty()).await;
        assert!(matches!(
            cache.listed().await,
            Err(Error::WatchStopped(kind)) if kind == "ConfigMap"
        ));
    }

    #[tokio::test]
    async fn waiting_on_a_watch_that_does_not_list_fails_and_says_which() {
        let shared = Shared::<ConfigMap>::new();
        let cache = shared.cache();
        let error = cache
            .listed_within(Duration::from_millis(10))
            .await
            .expect_err("never listed");
        assert!(matches!(&error, Error::NotListed { kind, .. } if kind == "ConfigMap"));
        assert_eq!(error.reason(), "WatchNotListed");
        drop(shared);
    }
}
