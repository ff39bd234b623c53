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
    // Only fails when the provider lacks every safe protocol version; ring has TLS 1.2 and 1.3.
    #[allow(clippy::expect_used)] // infallible with the ring provider (see above)
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

/// `url` for logs and error messages: scheme, host, port and path; never user info, a query or
/// a fragment (they may carry credentials).
pub fn redact_url(url: &str) -> String {
    if let Ok(uri) = url.parse::<http::Uri>()
        && let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host())
    {
        let port = uri.port().map(|p| format!(":{p}")).unwrap_or_default();
        return format!("{scheme}://{host}{port}{}", uri.path());
    }
    // Not a URL `http` can parse: cut what could be secret by hand, keep the rest so the
    // message still shows what was wrong.
    let text = url.split(['?', '#']).next().unwrap_or_default();
    match text.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or_default();
            format!("{scheme}://{host}{path}")
        }
        None => text.rsplit('@').next().unwrap_or_default().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_user_info_queries_and_fragments_in_logs() {
        assert_eq!(
            redact_url("https://u:p@collector.example:4318/v1/traces?api_key=s#f"),
            "https://collector.example:4318/v1/traces"
        );
        assert_eq!(
            redact_url("ftp//u:secret@host/x?key=s"),
            "host/x",
            "not a URL: still no user info or query"
        );
        assert_eq!(redact_url("nats://u:p@bad host/x"), "nats://bad host/x");
    }
}
