//! Logs and traces. [`init`] installs the one `tracing` subscriber of the process: the log layer
//! (`--log-format text|json` on stderr, filtered by `RUST_LOG`) and, only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, an OpenTelemetry
//! layer that batches spans and exports them over OTLP/HTTP (protobuf) — see [`export`].
//!
//! W3C trace context: [`continue_trace`] makes a request's `handshake` a child of the caller's
//! `traceparent`, and [`propagate`] hands the app the gateway's (proxy mode).
//!
//! Exported spans are the short-lived steps of the request path and of shutdown, each created
//! with [`TARGET`] so the two layers can tell them apart: the log layer never sees them (log lines
//! read exactly as they did before tracing existed) and the trace layer sees nothing else (no log
//! event, and so no header, token or query string, can reach a collector by accident).
//!
//! | span | where | attributes |
//! | --- | --- | --- |
//! | `handshake` | every request on an edge listener, until its response | `route`, `transport`, `status`, `outcome`, `reason` |
//! | `auth` | JWT check | `alg`, `kid`, `result` |
//! | `proxy.connect` | opening the app's WebSocket, or forwarding plain HTTP | `backend`, `result`, `status` |
//! | `rooms.join` | a member joins a room | `namespace`, `resumed`, `recovered`, `result` |
//! | `rooms.publish` | a client or the publish API publishes | `namespace`, `source`, `ephemeral`, `result` |
//! | `rooms.fanout` | a room message reaches this pod's members | `namespace`, `members` |
//! | `drain` | SIGTERM until the last connection closed (or the deadline) | `connections`, `duration_ms`, `outcome`, `left` |

pub mod export;

use std::io::IsTerminal as _;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

pub use export::{ExportSettings, TelemetryError};

/// Continue the caller's trace: with a W3C `traceparent` (and `tracestate`) on the request,
/// `span` (a request's `handshake`) becomes a child of that remote span instead of a new root.
/// Call it before the span is first entered. Nothing happens while spans are not exported.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if span.is_disabled() || !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    // Fails only for a span already started, which the caller rules out.
    let _ = span.set_parent(parent);
}

/// Put `span`'s W3C trace context on a request to the app (replacing what the client sent), so
/// the app's own spans join the gateway's trace. Without export, the client's headers pass
/// through unchanged.
pub fn propagate(span: &tracing::Span, headers: &mut http::HeaderMap) {
    if span.is_disabled() {
        return;
    }
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
}

/// The `tracing` target of every span meant for export (and of nothing else).
pub const TARGET: &str = "switchboard::trace";

/// How long shutdown waits for the last batch of spans to reach the collector.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// The installed telemetry: holds the tracer provider when traces are exported. Call
/// [`Telemetry::shutdown`] once the drain is over so its spans are sent before exit.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    endpoint: Option<String>,
}

impl Telemetry {
    /// Read the OpenTelemetry environment through `env` and build the exporter when an OTLP
    /// endpoint is set. Nothing is built (no thread, no runtime, no client) when none is.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Self, TelemetryError> {
        match ExportSettings::from_env(&env)? {
            Some(settings) => Ok(Self {
                provider: Some(export::provider(&settings, &env)?),
                endpoint: Some(settings.endpoint),
            }),
            None => Ok(Self {
                provider: None,
                endpoint: None,
            }),
        }
    }

    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flush the spans still queued and stop the exporter (bounded by a few seconds: a
    /// collector that is down must not hold the pod past its grace period).
    pub fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        if let Err(e) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            tracing::warn!(error = %e, "OpenTelemetry: spans may be lost at exit");
        }
    }
}

/// Install the process's subscriber: logs as `--log-format` says (`json`, otherwise text,
/// coloured only when stderr is a terminal and `NO_COLOR` is unset) and
/// the trace exporter when the environment asks for one. Errors name the variable at fault.
pub fn init(log_format: &str) -> Result<Telemetry, TelemetryError> {
    let telemetry = Telemetry::from_env(|k| std::env::var(k).ok())?;
    // Colour only for a person at a terminal: files, pipes and log collectors get plain text.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,pingora_core=warn,pingora=warn"));
    let tracer = telemetry
        .provider
        .as_ref()
        .map(|p| p.tracer("switchboard-gateway"));
    subscriber(log_format, colour, filter, tracer).init();
    if let Some(endpoint) = &telemetry.endpoint {
        let endpoint = crate::http_client::redact_url(endpoint);
        tracing::info!(%endpoint, "OpenTelemetry: exporting traces over OTLP/HTTP");
    }
    Ok(telemetry)
}

/// The subscriber [`init`] installs: the log layer (`filter` as `RUST_LOG` set it), and the trace
/// layer only when there is a `tracer` to export to.
fn subscriber(
    log_format: &str,
    colour: bool,
    filter: EnvFilter,
    tracer: Option<opentelemetry_sdk::trace::Tracer>,
) -> tracing::Dispatch {
    // Export-only spans stay out of the logs, whatever RUST_LOG says for `switchboard`.
    let filter = filter.add_directive(
        format!("{TARGET}=off")
            .parse()
            .unwrap_or_else(|_| Level::ERROR.into()),
    );
    let logs = fmt::layer().with_writer(std::io::stderr).with_ansi(colour);
    let logs = if log_format == "json" {
        logs.json().with_filter(filter).boxed()
    } else {
        logs.with_filter(filter).boxed()
    };
    let logged = tracing_subscriber::registry().with(logs);
    // Not `.with(Option<layer>)`: an absent layer still declares an interest in every callsite,
    // so each export-only span (one per connect, per published message and per fan-out) would
    // be built in the registry only for the log layer's filter to drop it.
    let Some(tracer) = tracer else {
        return tracing::Dispatch::new(logged);
    };
    let traces = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(
            filter_fn(|meta| meta.target() == TARGET && *meta.level() <= Level::INFO)
                // Without the hint the subscriber's max level becomes TRACE, and every
                // `log::trace!` of a dependency (several per WebSocket frame) is formatted
                // into an event just to be filtered out.
                .with_max_level_hint(LevelFilter::INFO),
        );
    tracing::Dispatch::new(logged.with(traces))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export_only_span_is_built(tracer: Option<opentelemetry_sdk::trace::Tracer>) -> bool {
        let dispatch = subscriber("text", false, EnvFilter::new("info"), tracer);
        tracing::dispatcher::with_default(&dispatch, || {
            !tracing::info_span!(target: TARGET, "rooms.fanout").is_disabled()
        })
    }

    /// One test, in this order: a callsite's interest is shared by every live dispatcher, so
    /// the exporter's dispatch, alive on another test thread, would enable the span for the
    /// other case too.
    #[test]
    fn export_only_spans_are_built_only_with_an_exporter() {
        // Built or not is what a span per message costs: a registry slot, its filter state and
        // the fields, for a span nobody reads.
        assert!(
            !export_only_span_is_built(None),
            "built without an exporter"
        );
        let provider = SdkTracerProvider::builder().build();
        assert!(
            export_only_span_is_built(Some(provider.tracer("test"))),
            "not built with an exporter"
        );
    }

    #[test]
    fn no_exporter_is_built_when_no_endpoint_is_set() {
        let t = Telemetry::from_env(|_| None).unwrap();
        assert!(!t.exporting());
        t.shutdown();
    }

    #[test]
    fn an_empty_endpoint_counts_as_unset() {
        let t = Telemetry::from_env(|k| (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(String::new))
            .unwrap();
        assert!(!t.exporting());
    }

    #[test]
    fn an_endpoint_builds_the_exporter_without_connecting() {
        let t = Telemetry::from_env(|k| {
            (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://127.0.0.1:9".to_string())
        })
        .unwrap();
        assert!(t.exporting());
        t.shutdown();
    }

    #[test]
    fn a_bad_endpoint_is_an_error_naming_the_variable() {
        let e = Telemetry::from_env(|k| {
            (k == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").then(|| "collector:4318".to_string())
        })
        .unwrap_err();
        assert!(
            e.to_string().contains("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            "{e}"
        );
    }
}
