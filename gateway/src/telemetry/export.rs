//! The OTLP/HTTP trace exporter, configured by the standard OpenTelemetry environment:
//!
//! - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   (`/v1/traces` appended): an absolute `http://` or `https://` URL. Unset or empty: no export.
//! - `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`: only `http/protobuf` (the default) is supported.
//! - `OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT`: milliseconds per export request, default 10000.
//! - `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`,
//!   `OTEL_RESOURCE_ATTRIBUTES`: as the OpenTelemetry SDK reads them.
//! - `OTEL_SERVICE_NAME`: default `switchboard-gateway`; `POD_NAME` and `POD_NAMESPACE` (the
//!   Kubernetes downward API) become `k8s.pod.name` / `service.instance.id` and
//!   `k8s.namespace.name`.
//!
//! The batch processor exports from its own thread; requests go through the gateway's own hyper +
//! rustls client (ring, webpki roots) on a small runtime that exists only when exporting.

use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry::KeyValue;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The service name when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
pub const DEFAULT_SERVICE_NAME: &str = "switchboard-gateway";

const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
const TRACES_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT";
const TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// A collector's answer is a small protobuf; anything larger is not worth buffering.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Why the exporter could not be set up (start-up stops with exit code 64).
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{var}: `{value}` is not an absolute http:// or https:// URL ({reason})")]
    Endpoint {
        var: &'static str,
        value: String,
        reason: String,
    },
    #[error("{var}: `{value}` is not supported; the gateway exports `http/protobuf` only")]
    Protocol { var: &'static str, value: String },
    #[error("{var}: `{value}` is not a number of milliseconds")]
    Timeout { var: &'static str, value: String },
    #[error("OpenTelemetry exporter: {0}")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    #[error("OpenTelemetry exporter runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Where and how to export, from the environment. Pure: `env` is the only input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSettings {
    /// The full URL spans are POSTed to.
    pub endpoint: String,
    /// Per export request, response included.
    pub timeout: Duration,
}

/// An environment variable that is set and not empty (the spec treats empty as unset).
fn var(env: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.trim().is_empty())
}

fn endpoint(var_name: &'static str, value: &str) -> Result<String, TelemetryError> {
    let bad = |reason: &str| TelemetryError::Endpoint {
        var: var_name,
        value: crate::http_client::redact_url(value),
        reason: reason.to_string(),
    };
    let url = url::Url::parse(value.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    // The URL must also be one `http::Uri` accepts, which is what the client sends to.
    value
        .trim()
        .parse::<http::Uri>()
        .map_err(|e| bad(&e.to_string()))?;
    Ok(value.trim().to_string())
}

impl ExportSettings {
    /// `Ok(None)` when no OTLP endpoint is set: traces are not exported.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, TelemetryError> {
        let endpoint = if let Some(v) = var(&env, TRACES_ENDPOINT) {
            endpoint(TRACES_ENDPOINT, &v)?
        } else if let Some(v) = var(&env, ENDPOINT) {
            // The generic endpoint is a base URL; the signal path is appended (OTLP spec).
            let base = endpoint(ENDPOINT, &v)?;
            format!("{}/v1/traces", base.trim_end_matches('/'))
        } else {
            return Ok(None);
        };
        for name in [TRACES_PROTOCOL, PROTOCOL] {
            if let Some(p) = var(&env, name) {
                if p.trim() != "http/protobuf" {
                    return Err(TelemetryError::Protocol {
                        var: name,
                        value: p,
                    });
                }
                break;
            }
        }
        let timeout = match [TRACES_TIMEOUT, TIMEOUT]
            .into_iter()
            .find_map(|name| var(&env, name).map(|v| (name, v)))
        {
            Some((name, v)) => {
                v.trim()
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| TelemetryError::Timeout {
                        var: name,
                        value: v,
                    })?
            }
            None => DEFAULT_TIMEOUT,
        };
        Ok(Some(Self { endpoint, timeout }))
    }
}

/// The resource: the SDK's (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, SDK attributes),
/// our default service name when none is given, the version, and the pod when known.
pub fn resource(env: &impl Fn(&str) -> Option<String>) -> Resource {
    let named = var(env, "OTEL_SERVICE_NAME").is_some()
        || var(env, "OTEL_RESOURCE_ATTRIBUTES").is_some_and(|attrs| {
            attrs
                .split(',')
                .any(|kv| kv.trim_start().starts_with("service.name="))
        });
    let mut builder = Resource::builder();
    if !named {
        builder = builder.with_service_name(DEFAULT_SERVICE_NAME);
    }
    let mut attrs = vec![KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))];
    if let Some(pod) = var(env, "POD_NAME") {
        attrs.push(KeyValue::new("k8s.pod.name", pod.clone()));
        attrs.push(KeyValue::new("service.instance.id", pod));
    }
    if let Some(ns) = var(env, "POD_NAMESPACE") {
        attrs.push(KeyValue::new("k8s.namespace.name", ns));
    }
    builder.with_attributes(attrs).build()
}

/// The tracer provider: a batch processor over the OTLP/HTTP exporter. The sampler comes from
/// `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG` (the SDK reads them; default parent-based
/// always-on).
pub fn provider(
    settings: &ExportSettings,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<SdkTracerProvider, TelemetryError> {
    let client = ExportClient::new(settings.timeout)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(settings.endpoint.clone())
        .with_timeout(settings.timeout)
        .with_http_client(client)
        .build()
        .map_err(TelemetryError::Exporter)?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(env))
        .build())
}

/// The runtime export requests run on. The batch processor calls the client from its own
/// thread (no reactor there), so each request is spawned here and awaited through its handle.
fn export_runtime() -> Result<&'static tokio::runtime::Runtime, TelemetryError> {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("switchboard-otlp")
        .enable_all()
        .build()
        .map_err(TelemetryError::Runtime)?;
    Ok(RT.get_or_init(|| rt))
}

/// The exporter's HTTP client: HTTP/1.1, `https://` via rustls (ring, webpki roots) or plain
/// `http://`, a deadline per request, response bodies capped.
#[derive(Debug)]
struct ExportClient {
    client: crate::http_client::HttpsClient<Full<Bytes>>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl ExportClient {
    fn new(timeout: Duration) -> Result<Self, TelemetryError> {
        Ok(Self {
            client: crate::http_client::https_client(Some(timeout)),
            runtime: export_runtime()?.handle().clone(),
            timeout,
        })
    }
}

#[async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let timeout = self.timeout;
        let task = self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let send = async move {
                let resp = client
                    .request(http::Request::from_parts(parts, Full::new(body)))
                    .await?;
                let (parts, body) = resp.into_parts();
                let body = Limited::new(body, MAX_RESPONSE_BYTES)
                    .collect()
                    .await?
                    .to_bytes();
                Ok::<_, HttpError>(Response::from_parts(parts, body))
            };
            match tokio::time::timeout(timeout, send).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {timeout:?}").into()),
            }
        });
        task.await.map_err(|e| Box::new(e) as HttpError)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_string())
        }
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint() {
        assert_eq!(ExportSettings::from_env(env(&[])).unwrap(), None);
        assert_eq!(
            ExportSettings::from_env(env(&[(ENDPOINT, " ")])).unwrap(),
            None
        );
    }

    #[test]
    fn the_generic_endpoint_gets_the_traces_path_appended() {
        for base in ["http://collector:4318", "http://collector:4318/"] {
            let s = ExportSettings::from_env(move |k| (k == ENDPOINT).then(|| base.to_string()))
                .unwrap()
                .unwrap();
            assert_eq!(s.endpoint, "http://collector:4318/v1/traces", "{base}");
            assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        }
    }

    #[test]
    fn the_traces_endpoint_is_used_as_is_and_wins() {
        let s = ExportSettings::from_env(env(&[
            (ENDPOINT, "http://generic:4318"),
            (TRACES_ENDPOINT, "https://traces.example.com/otlp/spans"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "https://traces.example.com/otlp/spans");
    }

    #[test]
    fn endpoints_that_are_not_http_urls_are_refused() {
        for bad in [
            "collector:4318",
            "localhost",
            "grpc://c:4317",
            "http://",
            "://x",
        ] {
            let e = ExportSettings::from_env(move |k| (k == ENDPOINT).then(|| bad.to_string()))
                .unwrap_err();
            assert!(
                e.to_string().starts_with("OTEL_EXPORTER_OTLP_ENDPOINT: "),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn only_http_protobuf_is_accepted_as_protocol() {
        let e = ExportSettings::from_env(env(&[(ENDPOINT, "http://c:4317"), (PROTOCOL, "grpc")]))
            .unwrap_err();
        assert!(e.to_string().contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{e}");
        // The signal-specific variable wins over the generic one.
        assert!(
            ExportSettings::from_env(env(&[
                (ENDPOINT, "http://c:4318"),
                (TRACES_PROTOCOL, "http/protobuf"),
                (PROTOCOL, "grpc"),
            ]))
            .is_ok()
        );
    }

    #[test]
    fn the_timeout_is_read_in_milliseconds() {
        let s = ExportSettings::from_env(env(&[(ENDPOINT, "http://c:4318"), (TIMEOUT, "2500")]))
            .unwrap()
            .unwrap();
        assert_eq!(s.timeout, Duration::from_millis(2500));
        assert!(
            ExportSettings::from_env(env(&[(ENDPOINT, "http://c:4318"), (TIMEOUT, "2s")])).is_err()
        );
    }

    fn attr(r: &Resource, key: &'static str) -> Option<String> {
        r.get(&opentelemetry::Key::from_static_str(key))
            .map(|v| v.to_string())
    }

    #[test]
    fn the_resource_names_the_service_and_the_pod() {
        let r = resource(&env(&[("POD_NAME", "gw-0"), ("POD_NAMESPACE", "edge")]));
        assert_eq!(attr(&r, "k8s.pod.name").as_deref(), Some("gw-0"));
        assert_eq!(attr(&r, "k8s.namespace.name").as_deref(), Some("edge"));
        // OTEL_SERVICE_NAME is not set in the test environment: our default applies.
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            assert_eq!(
                attr(&r, "service.name").as_deref(),
                Some(DEFAULT_SERVICE_NAME)
            );
        }
        let r = resource(&env(&[]));
        assert_eq!(attr(&r, "k8s.pod.name"), None);
    }
}
