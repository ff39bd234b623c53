//! The admin listener: `/healthz`, `/readyz`, `/status`, `/metrics`.

use std::convert::Infallible;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use crate::gateway::Gateway;
use crate::metrics::metrics;

/// The admin HTTP app.
pub struct AdminApp {
    pub gateway: Arc<Gateway>,
    /// Every listener as `(role, name, address it serves)`: role `edge` or `admin`, the bound
    /// port when the config said 0. Listed by `/status`.
    pub listening: Vec<(&'static str, String, std::net::SocketAddr)>,
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

/// Route an admin request.
pub fn respond(
    gw: &Gateway,
    listening: &[(&'static str, String, std::net::SocketAddr)],
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&http::Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n"),
        (&http::Method::GET, "/readyz") => {
            if gw.ready() {
                reply(StatusCode::OK, "text/plain", "ready\n")
            } else if gw.drain.is_draining() {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n")
            } else if !gw.loaded() {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready: waiting for the first config snapshot\n",
                )
            } else if !gw.hub.bus().healthy() {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready: room bus (NATS) unavailable\n",
                )
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready: waiting for JWKS\n",
                )
            }
        }
        (&http::Method::GET, "/status") => {
            let routes = gw.routes.load();
            let body = serde_json::json!({
                "version": crate::metrics::VERSION,
                "commit": crate::metrics::COMMIT,
                "generation": gw.config.load().generation,
                "ready": gw.ready(),
                "draining": gw.drain.is_draining(),
                "connections": gw.drain.live(),
                "routes": routes.len(),
                "routeFailures": routes.failures(),
                "listeners": listening
                    .iter()
                    .map(|(role, name, addr)| serde_json::json!({"role": role, "name": name, "address": addr.to_string()}))
                    .collect::<Vec<_>>(),
            });
            reply(StatusCode::OK, "application/json", body.to_string())
        }
        (&http::Method::GET, "/metrics") => {
            // Readiness is a condition, not an event: read it at scrape time so an unready pod
            // shows up in Prometheus while it stays unready.
            metrics().ready.set(i64::from(gw.ready()));
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                metrics().render(),
            )
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

#[async_trait]
impl ServerApp for AdminApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let gw = self.gateway.clone();
        let app = self.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let gw = gw.clone();
            let app = app.clone();
            async move {
                if req.method() == http::Method::POST && req.uri().path() == "/v1/publish" {
                    let (status, body) =
                        crate::rooms::publish_api::handle(&gw.config, &gw.hub, &gw.hooks, req)
                            .await;
                    return Ok::<_, Infallible>(reply(
                        status,
                        "application/json",
                        body.to_string(),
                    ));
                }
                if req.method() == http::Method::GET && req.uri().path() == "/v1/reads" {
                    let (status, body) =
                        crate::rooms::publish_api::reads(&gw.config, &gw.hub, req).await;
                    return Ok::<_, Infallible>(reply(
                        status,
                        "application/json",
                        body.to_string(),
                    ));
                }
                if req.uri().path().starts_with(crate::documents::api::PREFIX) {
                    let (status, ct, body) =
                        crate::documents::api::handle(&gw.config.load(), &gw.documents, req).await;
                    return Ok::<_, Infallible>(reply(status, ct, body));
                }
                Ok::<_, Infallible>(respond(&gw, &app.listening, &req))
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(std::time::Duration::from_secs(10))
            .serve_connection(TokioIo::new(stream), svc)
            .await;
        None
    }
}
