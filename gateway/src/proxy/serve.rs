//! Proxy mode, after the pipeline's shared checks: pick the pinned backend, prepare the request
//! the app sees (token carriers out, identity in), then either forward a plain HTTP request or
//! open the upstream WebSocket and spawn the tunnel that relays it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use switchboard_config::PinningKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::Instrument;

use super::identity::{self, identity_from_claims};
use super::upstream::{Handshake, open_websocket};
use crate::abort::Abortable;
use crate::admission::Passed;
use crate::auth::jwt::Claims;
use crate::auth::token;
use crate::drain::{CloseSignal, Drain};
use crate::engine::deflate::{self, Deflate};
use crate::engine::unbox;
use crate::error::Refusal;
use crate::http::{Body, full, unix_now};
use crate::metrics::metrics;
use crate::routes::CompiledRoute;
use crate::tunnel::event_loop::{self, LoopStream};
use crate::tunnel::relay::{self, DirCounters, Timer, TunnelLimits};
use crate::tunnel::threads::{Resumed, TunnelThreads};

/// The client plain HTTP requests are forwarded with; the body is the client's, wrapped to
/// tell its errors apart.
pub type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::combinators::BoxBody<Bytes, hyper::Error>,
>;

/// What proxy mode uses of the gateway.
pub struct Services<'a> {
    /// Live tunnels enter the drain and close on its signal.
    pub drain: &'a Arc<Drain>,
    /// Where an upgraded tunnel over plain TCP runs (`None`: where it was upgraded).
    pub tunnel_threads: Option<&'a Arc<TunnelThreads>>,
    /// Plain-HTTP forwarding.
    pub http: &'a HttpClient,
    /// Longest the app may take to answer the upgrade (`limits.upstreamTimeout`).
    pub upstream_timeout: Duration,
    /// Longest the app may take to answer a plain request (`limits.httpResponseTimeout`).
    pub http_response_timeout: Duration,
    /// The pod's connection count (an app's SSE answer is admitted like a connection).
    pub pod: &'a crate::admission::PodAdmission,
}

/// Serve a request that passed the shared checks on a proxy route.
pub async fn serve(
    svc: Services<'_>,
    route: Arc<CompiledRoute>,
    tls: bool,
    passed: Passed,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Refusal> {
    let Passed {
        claims,
        admitted,
        ip,
        websocket,
    } = passed;
    let key = pin_key(&route, &req, claims.as_ref(), ip);
    let backend = route
        .backends
        .pick(key.as_bytes())
        .ok_or(Refusal::NoBackend)?;
    let (headers, path_and_query) = upstream_request(&route, &req, claims.as_ref(), ip, tls);

    if !websocket {
        // An SSE stream is a long-lived connection like a WebSocket: it holds an admission
        // slot and ends at the token's `exp`, for as long as the app streams. Admitted at the
        // request when it asks for one (`Accept`), else when the app answers with one.
        let stream = Stream {
            admitted,
            expiry: route.close_at_expiry(claims.as_ref()),
            ip,
            user: claims.as_ref().and_then(|c| c.sub.clone()),
        };
        return forward_http(&svc, &route, backend, req, headers, &path_and_query, stream).await;
    }
    let on_client_upgrade = hyper::upgrade::on(&mut req);
    let (resp, upstream) = match upgrade_upstream(&svc, backend, headers, &path_and_query).await? {
        Handshake::Refused(resp) => {
            // The app said no: its answer goes to the client unchanged.
            metrics()
                .connections_total
                .with_label_values(&[&route.cfg.name, "app_refused"])
                .inc();
            let (parts, body) = resp.into_parts();
            return Ok(Response::from_parts(parts, body.boxed()));
        }
        Handshake::Upgraded(resp, upstream) => (resp, upstream),
    };
    // permessage-deflate toward the client when the route has `compression` on and the client
    // offers it; the app never sees the offer (identity.rs strips it) and stays uncompressed.
    let deflate = deflate::negotiate_request(req.headers(), &route.cfg.compression);
    let tunnel = Tunnel {
        limits: tunnel_limits(&route, claims.as_ref(), deflate),
        route_name: route.cfg.name.clone(),
        backend,
        ip,
        admitted,
    };
    tunnel.spawn(&svc, on_client_upgrade, upstream);
    let mut out = Response::new(full(Bytes::new()));
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *out.headers_mut() = resp.headers().clone();
    // The app was offered no extension, so whatever it answers is not the client's to see.
    out.headers_mut().remove(header::SEC_WEBSOCKET_EXTENSIONS);
    if let Some(v) = deflate.and_then(|d| HeaderValue::from_str(&d.response_header()).ok()) {
        out.headers_mut()
            .insert(header::SEC_WEBSOCKET_EXTENSIONS, v);
    }
    Ok(out)
}

/// The pinning key for this request (falls back to the client IP when the source is absent).
fn pin_key(
    route: &CompiledRoute,
    req: &Request<Incoming>,
    claims: Option<&Claims>,
    ip: IpAddr,
) -> String {
    let key = route.cfg.proxy.as_ref().and_then(|p| match &p.pinning {
        PinningKey::ClientIp => None,
        PinningKey::Claim(c) => claims.and_then(|cl| cl.get_str(c)),
        PinningKey::Header(h) => req
            .headers()
            .get(h.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        PinningKey::Query(q) => token::query_param(req.uri().query(), q),
        PinningKey::Cookie(name) => token::cookie(req.headers(), name),
    });
    key.unwrap_or_else(|| ip.to_string())
}

/// What the app sees: no token carriers, no client copies of identity, our identity; and the
/// target with the token's query parameter removed.
fn upstream_request(
    route: &CompiledRoute,
    req: &Request<Incoming>,
    claims: Option<&Claims>,
    ip: IpAddr,
    tls: bool,
) -> (http::HeaderMap, String) {
    let mut headers = req.headers().clone();
    let query = match &route.cfg.jwt {
        Some(jwt) => token::strip(&jwt.token_sources, &mut headers, req.uri().query()),
        None => req.uri().query().map(str::to_string),
    };
    let proxy = route.cfg.proxy.as_ref();
    let identity_map = proxy
        .map(|p| p.identity_headers.clone())
        .unwrap_or_default();
    let identity = identity_from_claims(&identity_map, |c| claims.and_then(|cl| cl.get_str(c)));
    let names: Vec<String> = identity_map.values().cloned().collect();
    let signature = match (
        proxy.and_then(|p| p.signature.as_ref()),
        &route.signature_key,
    ) {
        (Some(s), Some(k)) => Some((s.header.as_str(), k.as_slice())),
        _ => None,
    };
    let fwd = identity::Forwarding {
        client_ip: ip,
        tls,
        route: &route.cfg.name,
        now_unix: unix_now(),
    };
    let headers = identity::upstream_headers(&headers, &identity, &names, signature, fwd);
    let path_and_query = match &query {
        Some(q) => format!("{}?{q}", req.uri().path()),
        None => req.uri().path().to_string(),
    };
    (headers, path_and_query)
}

/// Send the upgrade to `backend` and wait for its answer (within `limits.upstreamTimeout`).
async fn upgrade_upstream(
    svc: &Services<'_>,
    backend: SocketAddr,
    mut headers: http::HeaderMap,
    path_and_query: &str,
) -> Result<Handshake, Refusal> {
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let mut up_req = Request::builder()
        .method(http::Method::GET)
        .uri(path_and_query)
        .body(Empty::<Bytes>::new())
        .map_err(|_| Refusal::BadHandshake("request target"))?;
    *up_req.headers_mut() = headers;
    let connect = connect_span(backend);
    crate::telemetry::propagate(&connect, up_req.headers_mut());
    let handshake = open_websocket(backend, up_req, svc.upstream_timeout)
        .instrument(connect.clone())
        .await;
    record_connect(
        connect,
        match &handshake {
            Ok(Handshake::Upgraded(resp, _)) => Ok(("upgraded", resp.status())),
            Ok(Handshake::Refused(resp)) => Ok(("app_refused", resp.status())),
            Err(r) => Err(r),
        },
    );
    handshake
}

/// The tunnel's limits, from the route (and the token's expiry).
fn tunnel_limits(
    route: &CompiledRoute,
    claims: Option<&Claims>,
    deflate: Option<Deflate>,
) -> TunnelLimits {
    TunnelLimits {
        max_message_bytes: route.cfg.limits.max_message_bytes,
        messages_per_second: route.cfg.limits.messages_per_second,
        message_burst: route.cfg.limits.message_burst,
        ping_interval: route.cfg.keepalive.interval,
        pong_timeout: route.cfg.keepalive.timeout,
        app_ping_interval: route.cfg.keepalive.app.interval,
        app_pong_timeout: route.cfg.keepalive.app.timeout,
        close_timeout: Duration::from_secs(5),
        expires_at: route.close_at_expiry(claims),
        drain_code: route.cfg.drain.close_code,
        drain_reason: route.cfg.drain.close_reason.clone(),
        drain_window: route.cfg.drain.window,
        deflate,
    }
}

/// One upgraded proxy connection, about to be relayed.
struct Tunnel {
    limits: TunnelLimits,
    route_name: String,
    backend: SocketAddr,
    ip: IpAddr,
    admitted: Option<crate::admission::Admitted>,
}

impl Tunnel {
    /// Count the upgrade and relay client <-> app in a task of its own, until either side
    /// closes; the connection is live for the drain, and holds its admission slot, until then.
    /// Once the client's upgrade is through, a tunnel over plain TCP moves to a tunnel thread
    /// (`tunnel/threads.rs`) with both its sockets.
    fn spawn(
        self,
        svc: &Services<'_>,
        on_client_upgrade: hyper::upgrade::OnUpgrade,
        upstream: hyper::upgrade::Upgraded,
    ) {
        let live = svc.drain.enter();
        let drain_signal = svc.drain.close_signal();
        let m = metrics();
        m.connections_total
            .with_label_values(&[&self.route_name, "upgraded"])
            .inc();
        let (fi, bi) = m.dir(&self.route_name, "inbound");
        let (fo, bo) = m.dir(&self.route_name, "outbound");
        let Tunnel {
            limits,
            route_name,
            backend,
            ip,
            admitted,
        } = self;
        // What the relay is built from waits for the client's upgrade in a box, and the task
        // uses what it captures in place: a value a task moves out of (into the relay) keeps
        // its place in the task for the task's whole life, beside the relay built from it.
        let parts = Box::new(Relayed {
            limits,
            inbound: DirCounters {
                frames: fi,
                bytes: bi,
            },
            outbound: DirCounters {
                frames: fo,
                bytes: bo,
            },
            drain_signal,
            route_name,
            backend,
            ip,
            held: (admitted, live),
        });
        // A tunnel thread, or `None` to relay where the upgrade completes.
        let threads = svc.tunnel_threads.cloned();
        tokio::spawn(async move {
            let Ok(client) = on_client_upgrade.await else {
                metrics()
                    .connections_total
                    .with_label_values(&[&parts.route_name, "upgrade_failed"])
                    .inc();
                return;
            };
            // upstream.rs hands hyper the app's socket as a `TokioIo<TcpStream>`.
            let Ok(app) = upstream.downcast::<TokioIo<TcpStream>>() else {
                tracing::error!(route = %parts.route_name, "the app's connection is not a TCP socket: closed");
                return;
            };
            let app_io = Resumed::new(app.read_buf, app.io.into_inner());
            match client.downcast::<TokioIo<Abortable<TcpStream>>>() {
                Ok(c) => {
                    let client_io = Resumed::new(c.read_buf, c.io.into_inner().into_inner());
                    match threads {
                        Some(threads) => move_to(&threads, client_io, app_io, parts),
                        None => {
                            parts
                                .relay(client_io, app_io, tokio::time::sleep_until)
                                .await
                        }
                    }
                }
                // TLS: relayed here.
                Err(client) => {
                    parts
                        .relay(TokioIo::new(client), app_io, tokio::time::sleep_until)
                        .await
                }
            }
        });
    }
}

/// What a tunnel's relay is built from, and what it reports and releases when it ends.
struct Relayed {
    limits: TunnelLimits,
    inbound: DirCounters,
    outbound: DirCounters,
    drain_signal: CloseSignal,
    route_name: String,
    backend: SocketAddr,
    ip: IpAddr,
    /// Released when the tunnel ends: the admission slot and the drain's live count.
    held: (Option<crate::admission::Admitted>, crate::drain::LiveGuard),
}

impl Relayed {
    /// Relay until either side closes, then count and log how the tunnel ended.
    async fn relay<C, U, T>(
        self: Box<Self>,
        client: C,
        app: U,
        timer: fn(tokio::time::Instant) -> T,
    ) where
        C: AsyncRead + AsyncWrite + Unpin,
        U: AsyncRead + AsyncWrite + Unpin,
        T: Timer,
    {
        let Relayed {
            limits,
            inbound,
            outbound,
            drain_signal,
            route_name,
            backend,
            ip,
            held: _held,
        } = unbox(self);
        let active = metrics()
            .connections_active
            .with_label_values(&[&route_name]);
        active.inc();
        let started = Instant::now();
        let outcome = relay::run(client, app, limits, inbound, outbound, drain_signal, timer).await;
        active.dec();
        let code = outcome.cause.code();
        metrics()
            .closes
            .with_label_values(&[
                &route_name,
                &*outcome.cause.code_label(),
                outcome.cause.label(),
            ])
            .inc();
        tracing::info!(
            target: "switchboard::connection",
            route = %route_name,
            backend = %backend,
            client_ip = %ip,
            duration_ms = started.elapsed().as_millis() as u64,
            bytes_in = outcome.bytes_in,
            bytes_out = outcome.bytes_out,
            frames_in = outcome.frames_in,
            frames_out = outcome.frames_out,
            close_code = code,
            cause = outcome.cause.label(),
            "connection ended"
        );
    }
}

/// Move a tunnel over plain TCP to a tunnel thread: both sockets leave this runtime's event
/// loop and join that thread's (`tunnel/event_loop.rs`), where the relay runs on its timers.
/// A socket that cannot be moved (the kernel refused to take it out of the event loop) ends
/// the tunnel, as a broken socket would.
fn move_to(
    threads: &TunnelThreads,
    client: Resumed<TcpStream>,
    app: Resumed<TcpStream>,
    parts: Box<Relayed>,
) {
    let detach = |io: Resumed<TcpStream>| io.try_map(TcpStream::into_std);
    let (client, app) = match (detach(client), detach(app)) {
        (Ok(client), Ok(app)) => (client, app),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(route = %parts.route_name, error = %e, "cannot move a tunnel's socket to a tunnel thread: closed");
            return;
        }
    };
    threads.spawn(async move {
        let attach = |io: Resumed<std::net::TcpStream>| io.try_map(LoopStream::from_std);
        match (attach(client), attach(app)) {
            (Ok(client), Ok(app)) => parts.relay(client, app, event_loop::sleep_until).await,
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(route = %parts.route_name, error = %e, "cannot register a tunnel's socket on its tunnel thread: closed");
            }
        }
    });
}

/// The `proxy.connect` span: from sending the handshake (or request) to the app's answer.
fn connect_span(backend: SocketAddr) -> tracing::Span {
    tracing::info_span!(
        target: crate::telemetry::TARGET,
        "proxy.connect",
        otel.kind = "client",
        backend = %backend,
        result = tracing::field::Empty,
        status = tracing::field::Empty,
    )
}

/// End a `proxy.connect` span with what the app answered (`result`, `status`) or the refusal.
fn record_connect(span: tracing::Span, outcome: Result<(&'static str, StatusCode), &Refusal>) {
    match outcome {
        Ok((result, status)) => {
            span.record("result", result);
            span.record("status", status.as_u16());
        }
        Err(r) => {
            span.record("result", r.label());
        }
    }
}

/// Forward a plain HTTP request to `backend` and its answer to the client.
async fn forward_http(
    svc: &Services<'_>,
    route: &CompiledRoute,
    backend: SocketAddr,
    req: Request<Incoming>,
    headers: http::HeaderMap,
    path_and_query: &str,
    stream: Stream,
) -> Result<Response<Body>, Refusal> {
    let uri: http::Uri = format!("http://{backend}{path_and_query}")
        .parse()
        .map_err(|_| Refusal::BadHandshake("request target"))?;
    let (parts, body) = req.into_parts();
    // A body the client breaks (a malformed chunk) fails the upstream request too: remember
    // whose fault it was, so it is a 400 for the client and not a 502 for the backend.
    let client_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = client_failed.clone();
    let body = body
        .map_err(move |e| {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
            e
        })
        .boxed();
    let mut up = Request::builder()
        .method(parts.method)
        .uri(uri)
        .body(body)
        .map_err(|_| Refusal::BadHandshake("request"))?;
    *up.headers_mut() = headers;
    let connect = connect_span(backend);
    crate::telemetry::propagate(&connect, up.headers_mut());
    let resp = tokio::time::timeout(svc.http_response_timeout, svc.http.request(up))
        .instrument(connect.clone())
        .await
        .map_err(|_| Refusal::BackendTimeout)
        .and_then(|r| {
            r.map_err(|_| {
                if client_failed.load(std::sync::atomic::Ordering::Relaxed) {
                    Refusal::BadRequestBody
                } else {
                    Refusal::BackendUnreachable
                }
            })
        });
    record_connect(
        connect,
        match &resp {
            Ok(resp) => Ok(("ok", resp.status())),
            Err(r) => Err(r),
        },
    );
    let resp = resp?;
    metrics()
        .http_requests
        .with_label_values(&[&route.cfg.name, resp.status().as_str()])
        .inc();
    metrics()
        .connections_total
        .with_label_values(&[&route.cfg.name, "http"])
        .inc();
    let (parts, body) = resp.into_parts();
    let event_stream = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
        });
    let admitted = match stream.admitted {
        Some(a) => Some(a),
        // The client did not ask for a stream, the app sent one: a connection all the same.
        None if event_stream => Some(route.admission.admit(
            &route.cfg.limits,
            stream.ip,
            stream.user.as_deref(),
            svc.pod,
        )?),
        None => None,
    };
    let body = match admitted {
        Some(admitted) => HeldBody {
            inner: body.boxed(),
            held: Held {
                _admitted: admitted,
                _live: svc.drain.enter(),
                expiry: stream
                    .expiry
                    .map(|at| Box::pin(tokio::time::sleep_until(at))),
                drained: {
                    let signal = svc.drain.close_signal();
                    let window = route.cfg.drain.window;
                    Box::pin(async move {
                        signal.closed().await;
                        tokio::time::sleep(crate::drain::jitter(window)).await;
                    })
                },
            },
        }
        .boxed(),
        None => body.boxed(),
    };
    Ok(Response::from_parts(parts, body))
}

/// What a plain request needs to be held as a stream ([`forward_http`]).
struct Stream {
    /// Taken at the request (it asked for `text/event-stream`).
    admitted: Option<crate::admission::Admitted>,
    /// The token's `exp` (`jwt.closeOnExpiry`).
    expiry: Option<tokio::time::Instant>,
    ip: IpAddr,
    user: Option<String>,
}

/// What an SSE response holds while the app streams it.
struct Held {
    /// The admission slot (connection caps), given back when the body ends or is dropped.
    _admitted: crate::admission::Admitted,
    /// A live connection of the pod (`/status` `connections`, the drain's `live`).
    _live: crate::drain::LiveGuard,
    /// The token's `exp` (`jwt.closeOnExpiry`): the stream ends there.
    expiry: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// The drain: the stream ends at a random point of the route's `drain.window` after it
    /// starts (like the rooms mode's SSE streams; `EventSource` reconnects to another pod).
    drained: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>,
}

/// The app's response body, holding [`Held`] until it ends.
struct HeldBody {
    inner: Body,
    held: Held,
}

impl hyper::body::Body for HeldBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(expiry) = this.held.expiry.as_mut()
            && expiry.as_mut().poll(cx).is_ready()
        {
            // The token expired: the stream ends (the client's reconnect meets the token check).
            return std::task::Poll::Ready(None);
        }
        if this.held.drained.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(None);
        }
        std::pin::Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
