//! A PolicyServer with `policyReloadMode: inPlace`: policy changes reach its running pods
//! without a restart, while requests keep coming and none fails.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;

/// Ports no other scenario's PolicyServer binds (local mode and host network share one host).
const WEBHOOK_PORT: i32 = 10443;
const READINESS_PORT: i32 = 10081;

/// Dry-run pod creations one after the other until stopped, all of which every version of the
/// scenario's policies admits: how many were answered, and what went wrong otherwise.
struct SteadyLoad {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl SteadyLoad {
    fn start(pods: Api<Pod>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let stop = stop.clone();
            let answered = answered.clone();
            async move {
                let dry_run = PostParams {
                    dry_run: true,
                    ..PostParams::default()
                };
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let name = unique_name("load");
                    match pods
                        .create(&dry_run, &pod(&name, json!({"e2e-in-place-load": "yes"})))
                        .await
                    {
                        Ok(_) => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => failures.push(err.to_string()),
                    }
                }
                failures
            }
        });
        SteadyLoad {
            stop,
            answered,
            task,
        }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.task.await.expect("the load task");
        (self.answered.load(Ordering::Relaxed), failures)
    }
}

/// What shows that the PolicyServer's pods were not replaced or restarted: their UIDs and
/// restart counts (local mode: the starts its process logged, the runner's only record).
async fn pod_generations(cluster: &TestCluster, policy_server: &str, logs: &Path) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let selector = format!(
        "{}={policy_server}",
        api_types::naming::labels::POLICY_SERVER
    );
    let mut generations: Vec<String> = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("pods")
        .items
        .iter()
        .map(api_types::load_status::pod_incarnation)
        .collect();
    generations.sort();
    let log = logs.join(format!("policy-server-{policy_server}.log"));
    if let Ok(text) = std::fs::read_to_string(&log) {
        generations.push(format!(
            "local process started {} time(s)",
            text.matches("ready to serve").count()
        ));
    }
    generations
}

async fn policy_loaded(policies: &Api<ClusterAdmissionPolicy>, name: &str) -> Value {
    let policy = serde_json::to_value(policies.get(name).await.expect("policy")).expect("json");
    status_condition(&policy, "PolicyLoaded")
}

pub async fn in_place_reload(cluster: &TestCluster, logs: &Path) {
    step("in place: a PolicyServer with policyReloadMode inPlace starts");
    let servers = cluster.cluster_wide::<PolicyServer>();
    let policies = cluster.cluster_wide::<ClusterAdmissionPolicy>();
    let pods = cluster.namespaced::<Pod>();
    let ns = cluster.namespace.clone();
    let name = unique_name("e2e-in-place");
    servers
        .create(
            &PostParams::default(),
            &policy_server(
                &name,
                json!({"policyReloadMode": "inPlace", "webhookPort": WEBHOOK_PORT, "readinessProbePort": READINESS_PORT}),
            ),
        )
        .await
        .expect("PolicyServer");
    let module = fixture_module("reject-by-label");
    let on_server = |mut policy: ClusterAdmissionPolicy| {
        policy.spec.common.policy_server = name.clone();
        policy
    };
    let policy = unique_name("e2e-in-place");
    policies
        .create(
            &PostParams::default(),
            &on_server(cluster_policy(
                &policy,
                &module,
                json!({"denied_labels": ["e2e-in-place-1"]}),
                &ns,
                json!({}),
            )),
        )
        .await
        .expect("policy");
    wait_active(&policies, &policy).await;
    create_pod_until(
        &pods,
        json!({"e2e-in-place-1": "yes"}),
        Some("label e2e-in-place-1 is not allowed"),
    )
    .await;
    let generations = pod_generations(cluster, &name, logs).await;
    let load = SteadyLoad::start(pods.clone());

    step("in place: new settings apply without a pod restart");
    let edited = std::time::Instant::now();
    policies
        .patch(
            &policy,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"settings": {"denied_labels": ["e2e-in-place-2"]}}})),
        )
        .await
        .expect("settings changed");
    create_pod_until(
        &pods,
        json!({"e2e-in-place-2": "yes"}),
        Some("label e2e-in-place-2 is not allowed"),
    )
    .await;
    println!(
        "    the new verdict after {:.1} s (in place)",
        edited.elapsed().as_secs_f64()
    );
    create_pod_until(&pods, json!({"e2e-in-place-1": "yes"}), None).await;

    step("in place: a policy is added, then deleted");
    let added = unique_name("e2e-in-place-added");
    policies
        .create(
            &PostParams::default(),
            &on_server(cluster_policy(
                &added,
                &module,
                json!({"denied_labels": ["e2e-in-place-3"]}),
                &ns,
                json!({}),
            )),
        )
        .await
        .expect("added policy");
    wait_active(&policies, &added).await;
    create_pod_until(
        &pods,
        json!({"e2e-in-place-3": "yes"}),
        Some("label e2e-in-place-3 is not allowed"),
    )
    .await;
    policies
        .delete(&added, &DeleteParams::default())
        .await
        .expect("deleted");
    wait_until("added policy gone", WAIT, || async {
        Ok(policies.get_opt(&added).await?.is_none())
    })
    .await
    .expect("finalizer released");
    create_pod_until(&pods, json!({"e2e-in-place-3": "yes"}), None).await;

    step("in place: settings the policy refuses are reported, and its previous version serves");
    policies
        .patch(
            &policy,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"settings": {"denied_labels": 3}}})),
        )
        .await
        .expect("bad settings");
    wait_until("PolicyLoaded=False for the new version", WAIT, || async {
        let loaded = policy_loaded(&policies, &policy).await;
        Ok(loaded["status"] == "False"
            && loaded["reason"] == "SettingsInvalid"
            && loaded["message"]
                .as_str()
                .is_some_and(|m| m.contains("previous one")))
    })
    .await
    .expect("the rejected update is reported");
    create_pod_until(
        &pods,
        json!({"e2e-in-place-2": "yes"}),
        Some("label e2e-in-place-2 is not allowed"),
    )
    .await;
    policies
        .patch(
            &policy,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"settings": {"denied_labels": ["e2e-in-place-4"]}}})),
        )
        .await
        .expect("settings fixed");
    create_pod_until(
        &pods,
        json!({"e2e-in-place-4": "yes"}),
        Some("label e2e-in-place-4 is not allowed"),
    )
    .await;
    wait_until("PolicyLoaded=True again", WAIT, || async {
        Ok(policy_loaded(&policies, &policy).await["status"] == "True")
    })
    .await
    .expect("loaded again");

    step("in place: no request failed and no pod restarted");
    let (answered, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the reloads: {failures:#?}",
        failures.len(),
        answered + failures.len()
    );
    assert!(answered > 0, "the steady load sent nothing");
    println!("    {answered} requests admitted during the reloads, none failed");
    assert_eq!(
        pod_generations(cluster, &name, logs).await,
        generations,
        "the PolicyServer's pods were replaced or restarted"
    );

    policies
        .delete(&policy, &DeleteParams::default())
        .await
        .expect("deleted");
    servers
        .delete(&name, &DeleteParams::default())
        .await
        .expect("PolicyServer deleted");
    wait_until("in-place PolicyServer gone", WAIT, || async {
        Ok(servers.get_opt(&name).await?.is_none() && policies.get_opt(&policy).await?.is_none())
    })
    .await
    .expect("cleaned up");
}
