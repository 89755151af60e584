//! The webhook endpoints: `/validate/{id}`, `/audit/{id}`, `/validate_raw/{id}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use policy_evaluator::admission::{DecodedRequest, Document, decode_request};
use policy_evaluator::response::AdmissionResponse;
use serde_json::json;
use tracing::Instrument as _;

use crate::evaluation::{self, Failure, Origin};
use crate::loader::ServedPolicy;
use crate::metrics::{EvaluationLabels, Metrics};
use crate::pool::EvaluationPool;
use crate::spans;

/// The policies a server serves, by id.
pub type ServedPolicies = HashMap<String, Arc<ServedPolicy>>;

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The policies served. An in-place reload replaces the whole set at once; a request
    /// keeps the policy it started with until it is answered.
    pub policies: ArcSwap<ServedPolicies>,
    /// Why the newest policies file could not be read (in-place reloading), while the
    /// previous configuration goes on serving.
    pub reload_error: Mutex<Option<String>>,
    pub pool: EvaluationPool,
    pub metrics: Metrics,
    pub always_accept_namespace: Option<String>,
}

impl AppState {
    pub fn set_reload_error(&self, error: Option<String>) {
        // A poisoned lock still holds a whole value.
        *self
            .reload_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = error;
    }

    pub fn reload_error(&self) -> Option<String> {
        self.reload_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

pub fn router(state: Arc<AppState>, max_body_bytes: usize, noop_endpoint: bool) -> Router {
    let mut router = Router::new()
        .route("/validate/{id}", post(validate))
        .route("/audit/{id}", post(audit))
        .route("/validate_raw/{id}", post(validate_raw));
    if noop_endpoint {
        router = router.route("/noop", post(noop));
    }
    router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// An error answered with a JSON body `{"message": .., "status": ..}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    (
        status,
        Json(json!({"message": message, "status": status.as_u16()})),
    )
        .into_response()
}

/// The benchmark baseline: parses the AdmissionReview like `/validate` and accepts it without
/// evaluating anything, so `/validate` minus `/noop` is the cost of evaluation.
async fn noop(body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return error(rejection.status(), rejection.body_text()),
    };
    match decode_request(&body, Document::AdmissionReview) {
        Ok(request) => {
            let response = AdmissionResponse {
                uid: request.uid().to_string(),
                allowed: true,
                ..Default::default()
            };
            Json(AdmissionReviewAnswer::new(&response)).into_response()
        }
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not found: the policy-server serves POST /validate/<policy id>, /audit/<policy id> and /validate_raw/<policy id>",
    )
}

async fn validate(
    state: State<Arc<AppState>>,
    id: Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(state, id, body, Origin::Validate).await
}

async fn audit(
    state: State<Arc<AppState>>,
    id: Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(state, id, body, Origin::Audit).await
}

async fn validate_raw(
    state: State<Arc<AppState>>,
    id: Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(state, id, body, Origin::Raw).await
}

async fn handle(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
    origin: Origin,
) -> Response {
    let response = answer(&state, &id, body, origin).await;
    let status = response.status();
    state
        .metrics
        .http_requests
        .with_label_values(&[origin.label(), status.as_str()])
        .inc();
    response
}

async fn answer(
    state: &Arc<AppState>,
    id: &str,
    body: Result<Bytes, BytesRejection>,
    origin: Origin,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return error(rejection.status(), rejection.body_text()),
    };
    let Some(policy) = state.policies.load().get(id).cloned() else {
        return error(StatusCode::NOT_FOUND, format!("unknown policy: {id}"));
    };
    // Shared with the evaluation thread, which drops its handle first: the request is freed
    // here, on the thread that allocated it (a tree parsed on demand for a Rego policy or a
    // mutation is the exception).
    let request = match decode_request(&body, origin.document()) {
        Ok(request) => Arc::new(request),
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let uid = request.uid();
    let namespace = request.namespace();

    let response = if origin == Origin::Validate
        && state.always_accept_namespace.as_deref() == Some(namespace)
        && !namespace.is_empty()
    {
        AdmissionResponse {
            uid: uid.to_string(),
            allowed: true,
            ..Default::default()
        }
    } else {
        let span = spans::request_span(origin.label(), id, &request);
        let (outcome, took) = evaluate_on_pool(state, &policy, request.clone(), origin)
            .instrument(span.clone())
            .await;
        let response = evaluation::respond(id, &policy, uid, outcome, origin);
        spans::record_verdict(&span, &response);
        state.metrics.record_evaluation(
            &EvaluationLabels {
                policy_name: id,
                policy_mode: policy.mode.as_str(),
                resource_kind: request.kind(),
                operation: request.operation(),
                accepted: response.allowed,
                mutated: response.patch.is_some(),
                origin: origin.label(),
                namespace,
                error_code: response.status.as_ref().and_then(|s| s.code),
            },
            took.as_secs_f64() * 1000.0,
        );
        response
    };
    match origin {
        Origin::Raw => Json(RawReview {
            response: &response,
        })
        .into_response(),
        _ => Json(AdmissionReviewAnswer::new(&response)).into_response(),
    }
}

/// The AdmissionReview answered to the API server, serialized straight from the response.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct AdmissionReviewAnswer<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: &'a AdmissionResponse,
}

impl<'a> AdmissionReviewAnswer<'a> {
    fn new(response: &'a AdmissionResponse) -> Self {
        AdmissionReviewAnswer {
            api_version: "admission.k8s.io/v1",
            kind: "AdmissionReview",
            response,
        }
    }
}

/// `/validate_raw` answers only the response.
#[derive(serde::Serialize)]
struct RawReview<'a> {
    response: &'a AdmissionResponse,
}

/// Runs the policy on the evaluation pool; with the outcome, how long the evaluation itself
/// took on its thread (zero when none ran), which is what the latency metric reports: the time
/// spent waiting for a worker shows in the pool's gauges instead.
async fn evaluate_on_pool(
    state: &AppState,
    policy: &ServedPolicy,
    request: Arc<DecodedRequest>,
    origin: Origin,
) -> (Result<AdmissionResponse, Failure>, Duration) {
    let decider = match &policy.decider {
        Ok(decider) => decider.clone(),
        Err(failure) => {
            return (
                Err(Failure::NotLoaded(failure.message.clone())),
                Duration::ZERO,
            );
        }
    };
    // The evaluation, on its worker thread, is a child of the request's span.
    let parent = tracing::Span::current();
    let ran = state
        .pool
        .run(move || {
            let _span = spans::evaluation_span(&parent).entered();
            let started = Instant::now();
            let outcome = evaluation::evaluate(&decider, &request, origin);
            (outcome, started.elapsed())
        })
        .await;
    match ran {
        Ok((outcome, took)) => (outcome.map_err(Failure::Evaluation), took),
        Err(err) => (Err(Failure::Pool(err)), Duration::ZERO),
    }
}
