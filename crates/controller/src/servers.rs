//! The controller's own HTTP endpoints: `/healthz` and `/readyz` on the health probe address,
//! `/metrics` on the metrics address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::metrics::Metrics;

/// Parses a Go-style bind address (`:8081`, `0.0.0.0:8081`, `[::]:8081`); `0` disables.
pub fn parse_bind_address(text: &str) -> Result<Option<SocketAddr>, String> {
    if text == "0" || text.is_empty() {
        return Ok(None);
    }
    let full = match text.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => text.to_string(),
    };
    full.parse::<SocketAddr>()
        .map(Some)
        .map_err(|err| format!("{text:?} is not a bind address (host:port or :port): {err}"))
}

/// Serves `/healthz` (always 200 while the process runs) and `/readyz` (200 once `ready`).
pub async fn serve_health(address: SocketAddr, ready: Arc<AtomicBool>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(ready): State<Arc<AtomicBool>>| async move {
                if ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting")
                }
            }),
        )
        .with_state(ready);
    let listener = tokio::net::TcpListener::bind(address).await?;
    axum::serve(listener, app).await
}

pub async fn serve_metrics(address: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(metrics): State<Arc<Metrics>>| async move { metrics.render() }),
        )
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(address).await?;
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_addresses() {
        assert_eq!(
            parse_bind_address(":8081"),
            Ok(Some("0.0.0.0:8081".parse().expect("addr")))
        );
        assert_eq!(
            parse_bind_address("127.0.0.1:9"),
            Ok(Some("127.0.0.1:9".parse().expect("addr")))
        );
        assert_eq!(parse_bind_address("0"), Ok(None));
        assert!(parse_bind_address(":99999").is_err());
    }
}
