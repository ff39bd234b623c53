//! TLS termination of the real binary: one listener, two certificates chosen by SNI. Each SNI
//! name gets its own certificate (checked byte for byte, and verified against the test CA for
//! that name), and WebSockets work over `wss`.
//!
//! Fixtures: `tests/fixtures/tls/` (`gen.sh` regenerates them): a test CA and leaf certificates
//! for `alpha.test` and `beta.test`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use support::{ConfigBuilder, route};
use support::{EchoServer, Gateway, assert_echo, close_normally, fixture, ws_config};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

fn config(backend: u16) -> String {
    let file = |name: &str| fixture(&format!("tls/{name}")).display().to_string();
    ConfigBuilder::new()
        .tls(json!({"certificates": [
            {"certFile": file("alpha.pem"), "keyFile": file("alpha.key.pem"), "hostnames": ["alpha.test"]},
            {"certFile": file("beta.pem"), "keyFile": file("beta.key.pem"), "hostnames": ["beta.test"]},
        ]}))
        .route(route("secure", "/").proxy(&[backend]))
        .yaml()
}

fn pem_certs(name: &str) -> Vec<CertificateDer<'static>> {
    let pem = std::fs::read(fixture(&format!("tls/{name}"))).expect("fixture certificate");
    rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

/// A client trusting only the test CA, with its own crypto provider (no process default).
fn connector() -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for ca in pem_certs("ca.pem") {
        roots.add(ca).expect("CA certificate");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(gateway: &Gateway, sni: &str) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(gateway.addr()).await?;
    let name = ServerName::try_from(sni.to_owned()).expect("DNS name");
    connector().connect(name, tcp).await
}

#[tokio::test]
async fn each_sni_name_gets_its_own_certificate() {
    let echo = EchoServer::start().await;
    let gateway = Gateway::start(&config(echo.port())).await;

    for name in ["alpha", "beta"] {
        let sni = format!("{name}.test");
        // Verification against the CA includes the name check: a wrong certificate fails here.
        let tls = tls_connect(&gateway, &sni)
            .await
            .unwrap_or_else(|e| panic!("TLS with SNI {sni}: {e}"));
        let served = tls
            .get_ref()
            .1
            .peer_certificates()
            .expect("the server sent certificates");
        assert_eq!(
            served[0],
            pem_certs(&format!("{name}.pem"))[0],
            "SNI {sni} got the {name} certificate"
        );
    }
}

#[tokio::test]
async fn websockets_work_over_tls_for_each_name() {
    let echo = EchoServer::start().await;
    let gateway = Gateway::start(&config(echo.port())).await;

    for sni in ["alpha.test", "beta.test"] {
        let tls = tls_connect(&gateway, sni)
            .await
            .unwrap_or_else(|e| panic!("TLS with SNI {sni}: {e}"));
        let url = format!("wss://{sni}/secure");
        let (mut ws, resp) =
            tokio_tungstenite::client_async_with_config(url, tls, Some(ws_config()))
                .await
                .unwrap_or_else(|e| panic!("wss handshake with {sni}: {e}"));
        assert_eq!(resp.status(), 101);
        assert_echo(&mut ws, &format!("over TLS to {sni}")).await;
        close_normally(&mut ws).await;
    }
    let handshakes = echo.handshakes();
    assert_eq!(handshakes.len(), 2);
    for h in &handshakes {
        assert_eq!(
            h.headers.get("x-forwarded-proto").map(|v| v.as_bytes()),
            Some(&b"https"[..]),
            "the app is told the client used TLS"
        );
    }
}
