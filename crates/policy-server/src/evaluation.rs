//! The evaluation core: how a served policy, single or group, answers a decoded request, and
//! how that answer is shaped for the endpoint the request came in on. The HTTP layer
//! (`api.rs`) only extracts the request, runs [`evaluate`] on the pool, and sends what
//! [`respond`] makes of the outcome.

use std::collections::BTreeMap;

use api_types::error_text::with_causes;
use api_types::group_expression::GroupExpression;
use policy_evaluator::admission::{DecodedRequest, Document, shape};
use policy_evaluator::response::{AdmissionResponse, AdmissionStatus, StatusCause, StatusDetails};
use policy_evaluator::{EvaluationError, PolicyEvaluator};

use crate::loader::{Decider, ServedPolicy};
use crate::pool::PoolError;

/// Which endpoint a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// `/validate`: the answer is shaped by the policy's mode and options.
    Validate,
    /// `/audit`: the audit-scanner wants the policy's raw verdict.
    Audit,
    /// `/validate_raw`: a free-form document, not an AdmissionReview; shaped as `/validate`.
    Raw,
}

impl Origin {
    pub(crate) fn document(self) -> Document {
        match self {
            Origin::Raw => Document::Raw,
            Origin::Validate | Origin::Audit => Document::AdmissionReview,
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Origin::Validate => "validate",
            Origin::Audit => "audit",
            Origin::Raw => "validate_raw",
        }
    }
}

/// Why a policy gave no verdict.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The policy could not be loaded: why.
    NotLoaded(String),
    Evaluation(EvaluationError),
    /// No worker could run the evaluation.
    Pool(PoolError),
}

/// The policy's own verdict on `request` (the raw document for [`Origin::Raw`]), unshaped.
/// Runs the guest: call it on an evaluation thread.
pub(crate) fn evaluate(
    decider: &Decider,
    request: &DecodedRequest,
    origin: Origin,
) -> Result<AdmissionResponse, EvaluationError> {
    match decider {
        Decider::Single(evaluator) => verdict(evaluator, request, origin),
        Decider::Group {
            expression,
            members,
            message,
        } => evaluate_group(expression, members, message, request, origin),
    }
}

fn verdict(
    evaluator: &PolicyEvaluator,
    request: &DecodedRequest,
    origin: Origin,
) -> Result<AdmissionResponse, EvaluationError> {
    match origin {
        Origin::Raw => evaluator.validate_raw_request(request),
        Origin::Validate | Origin::Audit => evaluator.validate_request(request),
    }
}

/// The answer to send: a failure becomes a code-500 rejection saying why (logged), and
/// `/validate` and `/validate_raw` apply the policy's mode, mutation permission and message,
/// as upstream does; `/audit` reports the policy's own verdict.
pub(crate) fn respond(
    id: &str,
    policy: &ServedPolicy,
    uid: &str,
    outcome: Result<AdmissionResponse, Failure>,
    origin: Origin,
) -> AdmissionResponse {
    let response = match outcome {
        Ok(response) => response,
        Err(Failure::NotLoaded(reason)) => AdmissionResponse::internal_error(uid, reason),
        Err(Failure::Evaluation(EvaluationError::Timeout(limit))) => {
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
        Err(Failure::Evaluation(err)) => {
            let error = with_causes(&err);
            tracing::warn!(policy = id, %error, "evaluation failed");
            AdmissionResponse::internal_error(uid, error)
        }
        Err(Failure::Pool(err)) => {
            tracing::error!(policy = id, error = %err, "evaluation could not run");
            AdmissionResponse::internal_error(uid, err)
        }
    };
    if origin == Origin::Audit {
        return response;
    }
    shape(
        id,
        policy.mode,
        policy.allowed_to_mutate,
        policy.message.as_deref(),
        response,
    )
}

/// Evaluates a group's expression, running a member only when the outcome depends on it.
fn evaluate_group(
    expression: &GroupExpression,
    members: &BTreeMap<String, PolicyEvaluator>,
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
        let response = verdict(member, request, origin)?;
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
