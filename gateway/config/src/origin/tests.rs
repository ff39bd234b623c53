use super::*;

fn allowed(pattern: &str, origin: &str) -> bool {
    OriginPattern::parse(pattern)
        .unwrap()
        .matches(&Origin::parse(origin).unwrap())
}

#[test]
fn exact_origin_matches_itself_case_insensitively() {
    assert!(allowed(
        "https://app.example.com",
        "https://app.example.com"
    ));
    assert!(allowed(
        "https://app.example.com",
        "HTTPS://App.Example.COM"
    ));
}

#[test]
fn default_ports_are_made_explicit_on_both_sides() {
    assert!(allowed(
        "https://app.example.com",
        "https://app.example.com:443"
    ));
    assert!(allowed(
        "https://app.example.com:443",
        "https://app.example.com"
    ));
    assert!(!allowed(
        "https://app.example.com",
        "https://app.example.com:8443"
    ));
    assert!(allowed("http://localhost:3000", "http://localhost:3000"));
    assert!(!allowed("http://localhost:3000", "http://localhost:3001"));
}

#[test]
fn scheme_must_match_exactly() {
    assert!(!allowed(
        "https://app.example.com",
        "http://app.example.com"
    ));
    assert!(!allowed(
        "http://app.example.com",
        "https://app.example.com"
    ));
}

#[test]
fn wildcard_matches_one_or_more_labels_but_not_the_apex() {
    assert!(allowed("https://*.example.com", "https://a.example.com"));
    assert!(allowed("https://*.example.com", "https://a.b.example.com"));
    assert!(!allowed("https://*.example.com", "https://example.com"));
}

#[test]
fn suffix_tricks_are_rejected() {
    assert!(!allowed("https://*.example.com", "https://evilexample.com"));
    assert!(!allowed(
        "https://*.example.com",
        "https://good.example.com.evil.com"
    ));
    assert!(!allowed(
        "https://good.example.com",
        "https://good.example.evil.com"
    ));
    assert!(!allowed(
        "https://*.example.com",
        "https://good.example.evil.com"
    ));
    assert!(!allowed(
        "https://app.example.com",
        "https://app.example.com.evil.com"
    ));
    assert!(Origin::parse("https://.example.com").is_err());
}

#[test]
fn malformed_patterns_are_refused_with_a_reason() {
    for bad in [
        "app.example.com",
        "https://",
        "https://app.example.com/path",
        "https://user@app.example.com",
        "https://*.com",
        "https://a*.example.com",
        "https://app.*.com",
        "https://app.example.com:99999",
        "ftp://app.example.com",
        "https://app..example.com",
    ] {
        assert!(
            OriginPattern::parse(bad).is_err(),
            "{bad} should be refused"
        );
    }
}

#[test]
fn request_origins_with_paths_or_wildcards_are_not_origins() {
    assert!(Origin::parse("https://a.example.com/x").is_err());
    assert!(Origin::parse("https://*.example.com").is_err());
    assert!(Origin::parse("null").is_err());
}

#[test]
fn ipv6_origins_compare_with_ports() {
    assert!(allowed("http://[::1]:8080", "http://[::1]:8080"));
    assert!(!allowed("http://[::1]:8080", "http://[::1]:8081"));
}
