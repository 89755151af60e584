//! The Kubewarden controller: reconciles PolicyServers into the Deployments, Services, Secrets,
//! ConfigMaps and PodDisruptionBudgets that run them, and policies into the webhook
//! configurations that send requests to them.
//!
//! Everything that decides what an object should look like is a pure function (`desired_*`,
//! [`policy::webhook`], [`policy::reachability`], [`policy_server::host_ports`]); the
//! reconcilers read the cluster, call them and apply the result with server-side apply.

pub mod backoff;
pub mod ca;
pub mod certs;
pub mod cleanup;
pub mod client_cert;
pub mod conditions;
pub mod context;
pub mod controllers;
pub mod error;
pub mod finalizer;
pub mod leader;
pub mod metrics;
pub mod options;
pub mod policy;
pub mod policy_server;
pub mod servers;
pub mod watches;

use std::sync::Arc;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

pub use context::Context;
pub use error::Error;
pub use metrics::Metrics;
pub use options::{Options, OwnPorts, TelemetryOptions};

/// Name the controller reports events under.
pub const REPORTER: &str = "kubewarden-controller";

/// Runs every reconciler until the watches end (in practice: until the future is dropped).
pub async fn run(client: Client, options: Options, metrics: Arc<Metrics>) {
    let reporter = Reporter {
        controller: REPORTER.to_string(),
        instance: std::env::var("HOSTNAME").ok(),
    };
    let watches = watches::SharedWatches::default();
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        options: Arc::new(options),
        metrics,
        backoff: Arc::new(backoff::Backoff::default()),
        load_status: Arc::default(),
        stores: watches.stores(),
    });
    controllers::run(ctx, watches).await;
}
