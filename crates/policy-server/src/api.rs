//! The webhook endpoints: `/validate/{id}`, `/audit/{id}`, `/validate_raw/{id}`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use policy_evaluator::EvaluationError;
use policy_evaluator::admission::{DecodedRequest, Document, decode_request, shape};
use policy_evaluator::response::{AdmissionResponse, AdmissionStatus, StatusCause, StatusDetails};
use serde_json::json;

use crate::loader::{Decider, ServedPolicy};
use crate::metrics::{EvaluationLabels, Metrics};
use crate::pool::EvaluationPool;

/// The policies a server serves, by id.
pub type ServedPolicies = HashMap<String, Arc<ServedPolicy>>;

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    pub policies: Arc<ServedPolicies>,
    pub pool: EvaluationPool,
    pub metrics: Metrics,
    pub always_accept_namespace: Option<String>,
}

/// Which endpoint a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// `/validate`: the answer is shaped by the policy's mode and options.
    Validate,
    /// `/audit`: the audit-scanner wants the policy's raw verdict.
    Audit,
    /// `/validate_raw`: a free-form document, not an AdmissionReview; shaped as `/validate`.
    Raw,
}

impl Origin {
    fn document(self) -> Document {
        match self {
            Origin::Raw => Document::Raw,
            Origin::Validate | Origin::Audit => Document::AdmissionReview,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Origin::Validate => "validate",
            Origin::Audit => "audit",
            Origin::Raw => "validate_raw",
        }
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
    let Some(policy) = state.policies.get(id).cloned() else {
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
        let (evaluated, took) = evaluate(state, policy.clone(), request.clone(), origin).await;
        let response = match evaluated {
            Ok(response) => response,
            Err(EvaluationFailure::Policy(reason)) => {
                AdmissionResponse::internal_error(uid, reason)
            }
            Err(EvaluationFailure::Evaluation(EvaluationError::Timeout(limit))) => {
                tracing::warn!(
                    policy = id,
                    ?limit,
                    "evaluation interrupted: deadline exceeded"
                );
                AdmissionResponse::rejection(
                    uid,
                    EvaluationError::Timeout(limit).to_string(),
                    Some(500),
                )
            }
            Err(EvaluationFailure::Evaluation(err)) => {
                tracing::warn!(policy = id, error = %err, "evaluation failed");
                AdmissionResponse::internal_error(uid, err)
            }
            Err(EvaluationFailure::Pool(err)) => {
                tracing::error!(policy = id, error = %err, "evaluation could not run");
                AdmissionResponse::internal_error(uid, err)
            }
        };
        // `/audit` reports the policy's own verdict; `/validate` and `/validate_raw` apply the
        // policy's mode, mutation permission and message (as upstream does).
        let response = if origin != Origin::Audit {
            shape(
                id,
                policy.mode,
                policy.allowed_to_mutate,
                policy.message.as_deref(),
                response,
            )
        } else {
            response
        };
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

#[derive(Debug)]
enum EvaluationFailure {
    /// The policy could not be loaded.
    Policy(String),
    Evaluation(EvaluationError),
    Pool(crate::pool::PoolError),
}

/// Evaluates `request` on the pool; with the outcome, how long the evaluation itself took on
/// its thread (zero when none ran), which is what the latency metric reports: the time spent
/// waiting for a worker shows in the pool's gauges instead.
async fn evaluate(
    state: &AppState,
    policy: Arc<ServedPolicy>,
    request: Arc<DecodedRequest>,
    origin: Origin,
) -> (Result<AdmissionResponse, EvaluationFailure>, Duration) {
    if let Err(failure) = &policy.decider {
        return (
            Err(EvaluationFailure::Policy(failure.message.clone())),
            Duration::ZERO,
        );
    }
    let ran = state
        .pool
        .run(move || {
            let started = Instant::now();
            let outcome = match &policy.decider {
                Ok(Decider::Single(evaluator)) => match origin {
                    Origin::Raw => evaluator.validate_raw_request(&request),
                    _ => evaluator.validate_request(&request),
                },
                Ok(Decider::Group {
                    expression,
                    members,
                    message,
                }) => evaluate_group(expression, members, message, &request, origin),
                Err(failure) => Err(EvaluationError::Instantiation(failure.message.clone())),
            };
            (outcome, started.elapsed())
        })
        .await;
    match ran {
        Ok((outcome, took)) => (outcome.map_err(EvaluationFailure::Evaluation), took),
        Err(err) => (Err(EvaluationFailure::Pool(err)), Duration::ZERO),
    }
}

/// Evaluates a group's expression, running a member only when the outcome depends on it.
fn evaluate_group(
    expression: &api_types::group_expression::GroupExpression,
    members: &std::collections::BTreeMap<String, policy_evaluator::PolicyEvaluator>,
    message: &str,
    request: &DecodedRequest,
    origin: Origin,
) -> Result<AdmissionResponse, EvaluationError> {
    let uid = request.uid();
    let mut causes = Vec::new();
    let mut warnings = Vec::new();
    let allowed = expression.evaluate(&mut |name: &str| -> Result<bool, EvaluationError> {
        let Some(member) = members.get(name) else {
            return Err(EvaluationError::InvalidRequest(format!(
                "unknown group member {name}"
            )));
        };
        let response = match origin {
            Origin::Raw => member.validate_raw_request(request)?,
            _ => member.validate_request(request)?,
        };
        warnings.extend(response.warnings.clone().unwrap_or_default());
        let (accepted, reason) = if response.patch.is_some() {
            (
                false,
                Some("mutation is not allowed inside of policy group".to_string()),
            )
        } else {
            (response.allowed, response.status.and_then(|s| s.message))
        };
        if !accepted {
            causes.push(StatusCause {
                field: Some(format!("spec.policies.{name}")),
                message: reason,
                reason: None,
            });
        }
        Ok(accepted)
    })?;
    let mut response = AdmissionResponse {
        uid: uid.to_string(),
        allowed,
        warnings: (!warnings.is_empty()).then_some(warnings),
        ..Default::default()
    };
    if !allowed {
        response.status = Some(AdmissionStatus {
            message: Some(message.to_string()),
            code: None,
            details: Some(StatusDetails { causes }),
        });
    }
    Ok(response)
}
