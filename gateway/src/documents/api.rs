//! The documents API on the admin listener, with the admin APIs' bearer token:
//! `GET /v1/documents/<namespace>/<document>` answers the document's current state as one Yjs
//! update (`application/octet-stream`; apply it with `Y.applyUpdate`), and `POST` to the same
//! path applies the body (one Yjs update) as a server-side edit: relayed to every editor and
//! stored like theirs (204).

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use switchboard_config::{Documents as DocCfg, GatewayConfig, RoomProtocol};

use crate::auth::api_token::authorize_api;
use crate::error::CloseCause;
use crate::rooms::authz::valid_room;
use crate::rooms::bus::RoomKey;

/// The path prefix this module serves.
pub const PREFIX: &str = super::API_PREFIX;

fn text(status: StatusCode, msg: &str) -> (StatusCode, &'static str, Bytes) {
    (status, "text/plain", Bytes::from(format!("{msg}\n")))
}

/// The document settings of the `yjs` rooms namespace `ns`, if one route serves it.
fn doc_cfg(cfg: &GatewayConfig, ns: &str) -> Option<DocCfg> {
    cfg.routes.iter().find_map(|r| {
        let rooms = r.rooms.as_ref()?;
        let name = rooms.namespace.clone().unwrap_or_else(|| r.name.clone());
        (rooms.protocol == RoomProtocol::Yjs && name == ns)
            .then(|| rooms.documents.clone().unwrap_or_default())
    })
}

/// Handle a documents API request: (status, content type, body).
pub async fn handle(
    config: &GatewayConfig,
    documents: &std::sync::Arc<super::Documents>,
    req: http::Request<Incoming>,
) -> (StatusCode, &'static str, Bytes) {
    if let Err(r) = authorize_api(config, req.headers()) {
        let (status, words) = r.answer();
        return text(status, words);
    }
    let rest = req.uri().path().strip_prefix(PREFIX).unwrap_or_default();
    let Some((ns, doc)) = rest.split_once('/') else {
        return text(
            StatusCode::NOT_FOUND,
            "use /v1/documents/<namespace>/<document>",
        );
    };
    let doc = percent_encoding::percent_decode_str(doc)
        .decode_utf8_lossy()
        .into_owned();
    if !valid_room(&doc) {
        return text(StatusCode::BAD_REQUEST, "invalid document name");
    }
    let Some(cfg) = doc_cfg(config, ns) else {
        return text(
            StatusCode::NOT_FOUND,
            "no yjs rooms route has this namespace",
        );
    };
    let key = RoomKey {
        namespace: ns.to_string(),
        room: doc,
    };
    match *req.method() {
        http::Method::GET => match documents.state(&key, &cfg).await {
            Ok(state) => (
                StatusCode::OK,
                "application/octet-stream",
                Bytes::from(state),
            ),
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, &e),
        },
        http::Method::POST => {
            let limit = usize::try_from(cfg.max_update_bytes).unwrap_or(usize::MAX);
            let body = match http_body_util::Limited::new(req.into_body(), limit)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return text(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "update over rooms.documents.maxUpdateBytes",
                    );
                }
            };
            match documents.apply(&key, &cfg, body.to_vec()).await {
                Ok(()) => (StatusCode::NO_CONTENT, "text/plain", Bytes::new()),
                Err(CloseCause::DocumentTooLarge | CloseCause::MessageTooBig) => {
                    text(StatusCode::PAYLOAD_TOO_LARGE, "document too large")
                }
                Err(CloseCause::ProtocolError) => {
                    text(StatusCode::BAD_REQUEST, "not a Yjs update (v1 encoding)")
                }
                Err(_) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "document store unavailable",
                ),
            }
        }
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "GET or POST"),
    }
}
