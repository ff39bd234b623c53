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
mod tests;
