use super::*;
use switchboard_config::Origins;

fn policy(
    allowed: &[&str],
    allow_null: bool,
    allow_missing: Option<bool>,
    creds: bool,
) -> OriginPolicy {
    let cfg = Origins {
        allowed: allowed.iter().map(|s| s.to_string()).collect(),
        allow_null,
        allow_missing,
    };
    OriginPolicy::new(&cfg, creds).unwrap()
}

fn with_origin(values: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append(http::header::ORIGIN, v.parse().unwrap());
    }
    h
}

#[test]
fn listed_origin_passes_and_unlisted_is_refused() {
    let p = policy(&["https://app.example.com"], false, None, false);
    assert!(p.check(&with_origin(&["https://app.example.com"])).is_ok());
    assert_eq!(
        p.check(&with_origin(&["https://evil.com"])),
        Err(Refusal::OriginNotAllowed)
    );
}

#[test]
fn null_origin_is_refused_unless_allowed() {
    assert!(
        policy(&["https://a.example.com"], false, None, false)
            .check(&with_origin(&["null"]))
            .is_err()
    );
    assert!(
        policy(&["https://a.example.com"], true, None, false)
            .check(&with_origin(&["null"]))
            .is_ok()
    );
}

#[test]
fn missing_origin_is_refused_by_default_when_the_route_takes_browser_credentials() {
    assert!(
        policy(&["https://a.example.com"], false, None, true)
            .check(&HeaderMap::new())
            .is_err()
    );
    assert!(
        policy(&["https://a.example.com"], false, None, false)
            .check(&HeaderMap::new())
            .is_ok()
    );
    assert!(
        policy(&["https://a.example.com"], false, Some(true), true)
            .check(&HeaderMap::new())
            .is_ok()
    );
    assert!(
        policy(&["https://a.example.com"], false, Some(false), false)
            .check(&HeaderMap::new())
            .is_err()
    );
}

#[test]
fn two_origin_headers_are_refused() {
    let p = policy(&["https://app.example.com"], false, None, false);
    assert!(
        p.check(&with_origin(&[
            "https://app.example.com",
            "https://evil.com"
        ]))
        .is_err()
    );
}

#[test]
fn garbage_origin_is_refused_not_panicked_on() {
    let p = policy(&["https://app.example.com"], false, None, false);
    for v in [
        "",
        "https://",
        "javascript:alert(1)",
        "https://app.example.com/",
        "\u{7f}",
    ] {
        let mut h = HeaderMap::new();
        if let Ok(val) = http::HeaderValue::from_str(v) {
            h.insert(http::header::ORIGIN, val);
            assert!(p.check(&h).is_err(), "{v:?}");
        }
    }
}

#[test]
fn empty_allow_list_accepts_any_origin_but_not_null() {
    let p = policy(&[], false, None, false);
    assert!(p.check(&with_origin(&["https://whatever.example"])).is_ok());
    assert!(p.check(&with_origin(&["null"])).is_err());
}
