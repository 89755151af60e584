//! The policy-server: the HTTPS admission webhook that evaluates Kubewarden policies.
//!
//! [`run`] is the whole server as the binary runs it. [`PolicyServer::load`] loads the
//! policies a [`Config`] names, and [`PolicyServer::router`] answers webhook requests from
//! them over any transport, or in-process (the API's tests call it with `tower`'s `oneshot`).

mod api;
pub mod capabilities;
mod cli;
mod evaluation;
/// Fetching modules (`file://`, `http(s)://`, `registry://`) with sources.yml settings and
/// registry credentials; also what `kwctl pull` and `kwctl push` reach registries with.
pub mod fetch;
mod heap;
mod loader;
mod metrics;
mod pool;
mod server;
pub mod signatures;
pub mod spans;
mod tls;

pub use api::ServedPolicies;
/// The policy-server's configuration: its command line, flags and environment variables as
/// upstream's.
pub use cli::Cli as Config;
pub use cli::LogFormat;
pub use loader::{Decider, LoadFailure, LoadSummary, ServedPolicy};
pub use metrics::Metrics;
pub use server::{PolicyServer, ReloadError, run};
