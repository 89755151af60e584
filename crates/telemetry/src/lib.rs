//! OpenTelemetry for the policy-server and the controller: traces (the `tracing` spans of the
//! process, through `tracing-opentelemetry`) and metrics, pushed over OTLP, gRPC or
//! HTTP/protobuf, configured as upstream is.
//!
//! The standard environment decides where and how: `OTEL_EXPORTER_OTLP_ENDPOINT` (and the
//! `_TRACES_`/`_METRICS_` variants), `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc`, the default, or
//! `http/protobuf`), `OTEL_EXPORTER_OTLP_INSECURE`, `_HEADERS`, `_TIMEOUT`, `_COMPRESSION`,
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_METRIC_EXPORT_INTERVAL`. TLS to the
//! collector takes upstream's variables, which the controller sets from the chart's
//! certificate secrets: `OTEL_EXPORTER_OTLP_CERTIFICATE` (the collector's CA),
//! `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and `OTEL_EXPORTER_OTLP_CLIENT_KEY` (mTLS), each
//! also per signal (`OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE`, ...).
//!
//! Export runs on the tokio runtime, batched, with bounded queues: a collector that is slow or
//! down costs dropped telemetry, never a slower request.

use std::time::Duration;

use opentelemetry::metrics::Meter;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig, Identity};
use opentelemetry_otlp::{
    Protocol, WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_subscriber::registry::LookupSpan;

/// Why telemetry cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("reading {variable}={path}: {source}")]
    ReadFile {
        variable: String,
        path: String,
        source: std::io::Error,
    },
    #[error("{variable} is set but {missing} is not: a client certificate needs its key")]
    IncompleteIdentity { variable: String, missing: String },
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("cannot build the OTLP {signal} exporter: {source}")]
    Exporter {
        signal: &'static str,
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// What to export.
#[derive(Debug, Clone)]
pub struct Options {
    /// `service.name` unless `OTEL_SERVICE_NAME` says otherwise.
    pub service_name: &'static str,
    pub traces: bool,
    pub metrics: bool,
}

/// Set once a meter provider exporting over OTLP is the global one.
static METRICS_EXPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The meter of the process's OTLP metrics export, when [`Telemetry::start`] started one
/// (instruments of other meters would record into the void).
pub fn exported_meter(name: &'static str) -> Option<Meter> {
    METRICS_EXPORTED
        .load(std::sync::atomic::Ordering::Relaxed)
        .then(|| opentelemetry::global::meter(name))
}

/// Whether an OTLP endpoint is configured for `signal` (`traces` or `metrics`) in the
/// environment, as the controller sets it for the PolicyServers it deploys.
pub fn endpoint_configured(signal: &str) -> bool {
    [
        format!(
            "OTEL_EXPORTER_OTLP_{}_ENDPOINT",
            signal.to_ascii_uppercase()
        ),
        "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
    ]
    .iter()
    .any(|variable| std::env::var(variable).is_ok_and(|value| !value.is_empty()))
}

/// The signals being exported; [`Telemetry::shutdown`] flushes them.
#[derive(Debug, Default)]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

/// The two signals, as the OTLP variables name them.
#[derive(Debug, Clone, Copy)]
enum Signal {
    Traces,
    Metrics,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Traces => "TRACES",
            Signal::Metrics => "METRICS",
        }
    }

    /// The signal's own variable, else the general one.
    fn env(self, suffix: &str) -> Option<(String, String)> {
        let specific = format!("OTEL_EXPORTER_OTLP_{}_{suffix}", self.name());
        let general = format!("OTEL_EXPORTER_OTLP_{suffix}");
        [specific, general].into_iter().find_map(|variable| {
            std::env::var(&variable)
                .ok()
                .filter(|value| !value.is_empty())
                .map(|value| (variable, value))
        })
    }

    fn protocol(self) -> Result<Protocol, TelemetryError> {
        match self.env("PROTOCOL").map(|(_, value)| value).as_deref() {
            None | Some("grpc") => Ok(Protocol::Grpc),
            Some("http/protobuf") => Ok(Protocol::HttpBinary),
            Some(other) => Err(TelemetryError::Invalid {
                what: "OTEL_EXPORTER_OTLP_PROTOCOL",
                reason: format!("{other:?}: use grpc or http/protobuf"),
            }),
        }
    }

    /// Whether the gRPC channel needs a TLS configuration: an `https://` endpoint (the
    /// system's roots, plus any CA file) or TLS files given.
    fn needs_tls(self, tls: &TlsFiles) -> bool {
        !tls.is_empty()
            || self
                .env("ENDPOINT")
                .is_some_and(|(_, endpoint)| endpoint.starts_with("https://"))
    }

    /// The PEM files of upstream's TLS variables: the collector's CA, and a client identity.
    fn tls_files(self) -> Result<TlsFiles, TelemetryError> {
        let read = |suffix: &str| -> Result<Option<(String, Vec<u8>)>, TelemetryError> {
            self.env(suffix)
                .map(|(variable, path)| {
                    std::fs::read(&path)
                        .map(|pem| (variable.clone(), pem))
                        .map_err(|source| TelemetryError::ReadFile {
                            variable,
                            path,
                            source,
                        })
                })
                .transpose()
        };
        let ca = read("CERTIFICATE")?.map(|(_, pem)| pem);
        let identity = match (read("CLIENT_CERTIFICATE")?, read("CLIENT_KEY")?) {
            (Some((_, cert)), Some((_, key))) => Some((cert, key)),
            (None, None) => None,
            (Some((variable, _)), None) => {
                return Err(TelemetryError::IncompleteIdentity {
                    variable,
                    missing: "OTEL_EXPORTER_OTLP_CLIENT_KEY".into(),
                });
            }
            (None, Some((variable, _))) => {
                return Err(TelemetryError::IncompleteIdentity {
                    variable,
                    missing: "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE".into(),
                });
            }
        };
        Ok(TlsFiles { ca, identity })
    }
}

#[derive(Debug, Default)]
struct TlsFiles {
    ca: Option<Vec<u8>>,
    /// Certificate and key, PEM.
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsFiles {
    fn is_empty(&self) -> bool {
        self.ca.is_none() && self.identity.is_none()
    }

    fn tonic(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().with_enabled_roots();
        if let Some(ca) = &self.ca {
            config = config.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        config
    }

    fn reqwest(&self) -> Result<reqwest::Client, TelemetryError> {
        let invalid = |e: reqwest::Error| TelemetryError::Invalid {
            what: "OTLP TLS files",
            reason: e.to_string(),
        };
        let mut builder = reqwest::Client::builder();
        if let Some(ca) = &self.ca {
            for certificate in reqwest::Certificate::from_pem_bundle(ca).map_err(invalid)? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if let Some((cert, key)) = &self.identity {
            let mut pem = cert.clone();
            pem.extend_from_slice(key);
            builder = builder.identity(reqwest::Identity::from_pem(&pem).map_err(invalid)?);
        }
        builder.build().map_err(invalid)
    }
}

fn resource(service_name: &'static str) -> Resource {
    // `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (read by the builder) take precedence.
    let named_by_env = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    let builder = Resource::builder();
    if named_by_env {
        builder.build()
    } else {
        builder.with_service_name(service_name).build()
    }
}

/// How often metrics are pushed: `OTEL_METRIC_EXPORT_INTERVAL` milliseconds, else 60 s.
fn metric_interval() -> Result<Duration, TelemetryError> {
    match std::env::var("OTEL_METRIC_EXPORT_INTERVAL") {
        Ok(text) => text
            .parse::<u64>()
            .ok()
            .filter(|millis| *millis > 0)
            .map(Duration::from_millis)
            .ok_or_else(|| TelemetryError::Invalid {
                what: "OTEL_METRIC_EXPORT_INTERVAL",
                reason: format!("{text:?} is not a number of milliseconds"),
            }),
        Err(_) => Ok(Duration::from_secs(60)),
    }
}

fn span_exporter() -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    let signal = Signal::Traces;
    let tls = signal.tls_files()?;
    let built = match signal.protocol()? {
        Protocol::Grpc => {
            let builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            if signal.needs_tls(&tls) {
                builder.with_tls_config(tls.tonic())
            } else {
                builder
            }
            .build()
        }
        protocol => {
            let builder = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(protocol)
                .with_http_client(tls.reqwest()?);
            builder.build()
        }
    };
    built.map_err(|source| TelemetryError::Exporter {
        signal: "traces",
        source,
    })
}

fn metric_exporter() -> Result<opentelemetry_otlp::MetricExporter, TelemetryError> {
    let signal = Signal::Metrics;
    let tls = signal.tls_files()?;
    let built = match signal.protocol()? {
        Protocol::Grpc => {
            let builder = opentelemetry_otlp::MetricExporter::builder().with_tonic();
            if signal.needs_tls(&tls) {
                builder.with_tls_config(tls.tonic())
            } else {
                builder
            }
            .build()
        }
        protocol => opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .with_http_client(tls.reqwest()?)
            .build(),
    };
    built.map_err(|source| TelemetryError::Exporter {
        signal: "metrics",
        source,
    })
}

impl Telemetry {
    /// Starts the exporters `options` asks for. Call it within the tokio runtime the exports
    /// should run on.
    pub fn start(options: &Options) -> Result<Self, TelemetryError> {
        let resource = resource(options.service_name);
        let tracer_provider = if options.traces {
            let processor =
                opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                    span_exporter()?,
                    opentelemetry_sdk::runtime::Tokio,
                )
                .build();
            Some(
                SdkTracerProvider::builder()
                    .with_span_processor(processor)
                    .with_resource(resource.clone())
                    .build(),
            )
        } else {
            None
        };
        let meter_provider = if options.metrics {
            let reader =
                opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader::builder(
                    metric_exporter()?,
                    opentelemetry_sdk::runtime::Tokio,
                )
                .with_interval(metric_interval()?)
                .build();
            let provider = SdkMeterProvider::builder()
                .with_reader(reader)
                .with_resource(resource)
                .build();
            opentelemetry::global::set_meter_provider(provider.clone());
            METRICS_EXPORTED.store(true, std::sync::atomic::Ordering::Relaxed);
            Some(provider)
        } else {
            None
        };
        Ok(Telemetry {
            tracer_provider,
            meter_provider,
        })
    }

    /// The `tracing` layer sending spans to the trace exporter, when traces are exported.
    pub fn layer<S>(&self) -> Option<tracing_opentelemetry::OpenTelemetryLayer<S, SdkTracer>>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        let provider = self.tracer_provider.as_ref()?;
        Some(tracing_opentelemetry::layer().with_tracer(provider.tracer("kubewarden")))
    }

    /// Exports what is pending and stops; errors are logged (the process is stopping).
    pub fn shutdown(&self) {
        if let Some(provider) = &self.tracer_provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "flushing the last traces failed");
        }
        if let Some(provider) = &self.meter_provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "flushing the last metrics failed");
        }
    }
}
