//! The one way the gateway makes outgoing HTTP requests (JWKS fetches, hooks and notifications,
//! trace export): HTTP/1.1 over plain TCP for `http://` and rustls for `https://` (the process's
//! ring provider, webpki roots).

use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// An outgoing HTTP client sending bodies of type `B`.
pub type HttpsClient<B> = Client<HttpsConnector<HttpConnector>, B>;

/// A client for `http://` and `https://` URLs; `connect_timeout` bounds the TCP connect (the
/// caller bounds the whole request).
pub fn https_client<B>(connect_timeout: Option<Duration>) -> HttpsClient<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(connect_timeout);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        // Only fails when the provider lacks every safe protocol version; ring has TLS 1.2 and
        // 1.3, so this cannot fail.
        .expect("the ring provider supports the default TLS versions")
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(https)
}
