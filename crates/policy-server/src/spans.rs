//! The trace spans of admission requests, named and shaped as upstream's: one per request
//! (`validation`, `audit`, `validation_raw`) with the request's identity and, once known, its
//! verdict; the policy's evaluation, on its worker thread, as its child. Exported over OTLP
//! with `--log-fmt otlp`.
//!
//! They carry their own target, which log output leaves out ([`not_request_spans`]):
//! formatting their fields into every log line's context would cost each request several
//! microseconds for nothing a log reader needs (see `benches/spans.rs`).

use policy_evaluator::admission::DecodedRequest;
use policy_evaluator::response::AdmissionResponse;
use tracing::Span;
use tracing::field::Empty;

/// The target of the request spans.
pub const TARGET: &str = "kubewarden::request";

/// The filter a log layer takes to leave the request spans to the trace export.
pub fn not_request_spans() -> tracing_subscriber::filter::FilterFn {
    tracing_subscriber::filter::filter_fn(|metadata| {
        !(metadata.is_span() && metadata.target() == TARGET)
    })
}

/// The span of a request to `policy_id` on the endpoint labelled `origin` (`validate`,
/// `audit`, `validate_raw`).
pub fn request_span(origin: &str, policy_id: &str, request: &DecodedRequest) -> Span {
    macro_rules! span {
        ($name:literal) => {
            tracing::info_span!(
                target: TARGET,
                $name,
                policy_id,
                request_uid = request.uid(),
                kind = request.kind(),
                operation = request.operation(),
                namespace = request.namespace(),
                allowed = Empty,
                mutated = Empty,
                response_code = Empty,
                response_message = Empty,
            )
        };
    }
    match origin {
        "audit" => span!("audit"),
        "validate_raw" => span!("validation_raw"),
        _ => span!("validation"),
    }
}

/// The span of the evaluation, a child of the request's `parent` span.
pub fn evaluation_span(parent: &Span) -> Span {
    tracing::info_span!(target: TARGET, parent: parent, "policy_evaluation")
}

/// Records the answer into the request's span.
pub fn record_verdict(span: &Span, response: &AdmissionResponse) {
    span.record("allowed", response.allowed);
    span.record("mutated", response.patch.is_some());
    if let Some(status) = &response.status {
        if let Some(code) = status.code {
            span.record("response_code", code);
        }
        if let Some(message) = &status.message {
            span.record("response_message", message.as_str());
        }
    }
}
