//! Finding the token in a handshake request, and removing it before the request goes on.
//!
//! Sources are tried in the route's order. Query and subprotocol carriers are stripped from
//! what is forwarded (and from what is logged); only real subprotocols reach the app.

use http::{HeaderMap, HeaderValue};
use switchboard_config::TokenSource;

/// Where a token was found (so the carrier can be stripped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Bearer,
    Subprotocol { prefix: String },
    Query { name: String },
    Cookie { name: String },
}

/// Find the first token among `sources`.
pub fn extract(
    sources: &[TokenSource],
    headers: &HeaderMap,
    query: Option<&str>,
) -> Option<(String, Found)> {
    for source in sources {
        let hit = match source {
            TokenSource::Bearer {} => headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer_credentials)
                .map(|t| (t.to_string(), Found::Bearer)),
            TokenSource::Subprotocol { prefix } => subprotocols(headers)
                .into_iter()
                .find_map(|p| p.strip_prefix(prefix.as_str()).map(str::to_string))
                .map(|t| {
                    (
                        t,
                        Found::Subprotocol {
                            prefix: prefix.clone(),
                        },
                    )
                }),
            TokenSource::Query { name } => {
                query_param(query, name).map(|v| (v, Found::Query { name: name.clone() }))
            }
            TokenSource::Cookie { name } => {
                cookie(headers, name).map(|v| (v, Found::Cookie { name: name.clone() }))
            }
        };
        if let Some((token, found)) = hit
            && !token.is_empty()
        {
            return Some((token, found));
        }
    }
    None
}

/// The token of an `Authorization` value of the `Bearer` scheme (RFC 6750 §2.1; the scheme
/// is case-insensitive, RFC 9110 §11.1), or `None` for another scheme or an empty token.
pub fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A query parameter, decoded (the first if repeated).
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A cookie's value from the `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

/// The offered subprotocols, in order.
pub fn subprotocols(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Remove every token carrier named by `sources` from headers and query: the app gets no token
/// through a side channel it did not ask for, and logs never see one. `Authorization` is kept
/// only when the route reads tokens elsewhere (it may be the app's own credential).
pub fn strip(
    sources: &[TokenSource],
    headers: &mut HeaderMap,
    query: Option<&str>,
) -> Option<String> {
    let mut query = query.map(str::to_string);
    for source in sources {
        match source {
            TokenSource::Bearer {} => {
                headers.remove(http::header::AUTHORIZATION);
            }
            TokenSource::Subprotocol { prefix } => {
                let kept: Vec<String> = subprotocols(headers)
                    .into_iter()
                    .filter(|p| !p.starts_with(prefix.as_str()))
                    .map(str::to_string)
                    .collect();
                headers.remove(http::header::SEC_WEBSOCKET_PROTOCOL);
                if !kept.is_empty()
                    && let Ok(v) = HeaderValue::from_str(&kept.join(", "))
                {
                    headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, v);
                }
            }
            TokenSource::Query { name } => {
                query = query.map(|q| remove_query_param(&q, name));
            }
            TokenSource::Cookie { name } => {
                let kept: Vec<String> = headers
                    .get_all(http::header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .map(str::trim)
                    .filter(|c| {
                        !c.is_empty() && c.split('=').next().map(str::trim) != Some(name.as_str())
                    })
                    .map(str::to_string)
                    .collect();
                headers.remove(http::header::COOKIE);
                if !kept.is_empty()
                    && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
                {
                    headers.insert(http::header::COOKIE, v);
                }
            }
        }
    }
    query.filter(|q| !q.is_empty())
}

/// `query` without parameter `name` (other parameters kept byte-for-byte, in order).
pub fn remove_query_param(query: &str, name: &str) -> String {
    query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or("");
            let key = percent_encoding::percent_decode_str(&key.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned();
            !pair.is_empty() && key != name
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    fn all() -> Vec<TokenSource> {
        vec![
            TokenSource::Bearer {},
            TokenSource::Subprotocol {
                prefix: "bearer.".into(),
            },
            TokenSource::Query {
                name: "access_token".into(),
            },
            TokenSource::Cookie { name: "sb".into() },
        ]
    }

    #[test]
    fn bearer_header_is_found_case_insensitively() {
        let (t, f) = extract(&all(), &h(&[("authorization", "bearer abc.def.ghi")]), None).unwrap();
        assert_eq!((t.as_str(), f), ("abc.def.ghi", Found::Bearer));
    }

    #[test]
    fn subprotocol_token_is_found_and_only_real_protocols_are_forwarded() {
        let mut headers = h(&[("sec-websocket-protocol", "chat.v1, bearer.abc.def.ghi")]);
        let (t, _) = extract(&all(), &headers, None).unwrap();
        assert_eq!(t, "abc.def.ghi");
        strip(&all(), &mut headers, None);
        assert_eq!(headers.get("sec-websocket-protocol").unwrap(), "chat.v1");
    }

    #[test]
    fn query_token_is_found_and_stripped_keeping_other_parameters() {
        let q = "room=a%20b&access_token=abc.def.ghi&x=1";
        let (t, _) = extract(&all(), &HeaderMap::new(), Some(q)).unwrap();
        assert_eq!(t, "abc.def.ghi");
        assert_eq!(
            strip(&all(), &mut HeaderMap::new(), Some(q)).as_deref(),
            Some("room=a%20b&x=1")
        );
        assert_eq!(
            strip(&all(), &mut HeaderMap::new(), Some("access_token=z")),
            None
        );
    }

    #[test]
    fn cookie_token_is_found_and_only_that_cookie_is_removed() {
        let mut headers = h(&[("cookie", "a=1; sb=abc.def.ghi; b=2")]);
        let (t, _) = extract(&all(), &headers, None).unwrap();
        assert_eq!(t, "abc.def.ghi");
        strip(&all(), &mut headers, None);
        assert_eq!(headers.get("cookie").unwrap(), "a=1; b=2");
    }

    #[test]
    fn sources_are_tried_in_the_configured_order() {
        let headers = h(&[("authorization", "Bearer from-header")]);
        let sources = vec![
            TokenSource::Query { name: "t".into() },
            TokenSource::Bearer {},
        ];
        assert_eq!(
            extract(&sources, &headers, Some("t=from-query")).unwrap().0,
            "from-query"
        );
    }

    #[test]
    fn empty_or_other_scheme_tokens_are_missing() {
        assert!(extract(&all(), &h(&[("authorization", "Basic dXNlcjpwdw==")]), None).is_none());
        assert!(extract(&all(), &h(&[("authorization", "Bearer ")]), None).is_none());
        assert!(extract(&all(), &HeaderMap::new(), Some("access_token=")).is_none());
    }

    #[test]
    fn encoded_parameter_names_are_stripped_too() {
        assert_eq!(
            remove_query_param("access%5Ftoken=x&y=2", "access_token"),
            "y=2"
        );
    }
}
