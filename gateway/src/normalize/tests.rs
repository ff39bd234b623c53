use proptest::prelude::*;

use std::borrow::Cow;

use switchboard_config::{EscapedSlashes, ListenerPaths};

use super::*;

fn opts(merge_slashes: bool, escaped_slashes: EscapedSlashes) -> ListenerPaths {
    ListenerPaths {
        merge_slashes,
        escaped_slashes,
    }
}

fn default_path(raw: &str) -> Result<String, PathError> {
    path(raw, ListenerPaths::default()).map(Cow::into_owned)
}

#[test]
fn the_rfc_3986_worked_examples_remove_their_dot_segments() {
    // §5.2.4's two examples, then §5.4.1/§5.4.2 (base /b/c/d;p) after the §5.2.3 merge.
    for (input, want) in [
        ("/a/b/c/./../../g", "/a/g"),
        ("mid/content=5/../6", "mid/6"),
        ("/b/c/g", "/b/c/g"),
        ("/b/c/./g", "/b/c/g"),
        ("/b/c/g/", "/b/c/g/"),
        ("/b/c/.", "/b/c/"),
        ("/b/c/./", "/b/c/"),
        ("/b/c/..", "/b/"),
        ("/b/c/../", "/b/"),
        ("/b/c/../g", "/b/g"),
        ("/b/c/../..", "/"),
        ("/b/c/../../", "/"),
        ("/b/c/../../g", "/g"),
        ("/b/c/../../../g", "/g"),
        ("/b/c/../../../../g", "/g"),
        ("/./g", "/g"),
        ("/../g", "/g"),
        ("/b/c/g.", "/b/c/g."),
        ("/b/c/.g", "/b/c/.g"),
        ("/b/c/g..", "/b/c/g.."),
        ("/b/c/..g", "/b/c/..g"),
        ("/b/c/./../g", "/b/g"),
        ("/b/c/./g/.", "/b/c/g/"),
        ("/b/c/g/./h", "/b/c/g/h"),
        ("/b/c/g/../h", "/b/c/h"),
        ("/b/c/g;x=1/./y", "/b/c/g;x=1/y"),
        ("/b/c/g;x=1/../y", "/b/c/y"),
    ] {
        assert_eq!(remove_dot_segments(input), want, "{input}");
    }
}

#[test]
fn the_edge_cases_of_each_rule_hold() {
    for (input, want) in [
        ("", ""),
        ("/", "/"),
        (".", ""),
        ("..", ""),
        ("../a", "a"),
        ("./a", "a"),
        ("/.", "/"),
        ("/..", "/"),
        ("/../..", "/"),
        ("/a/..", "/"),
        ("/a/../", "/"),
        ("//..", "/"),
        ("/a//..", "/a/"),
        ("/a/..//b", "//b"),
        ("/...", "/..."),
        ("/.../..", "/"),
    ] {
        assert_eq!(remove_dot_segments(input), want, "{input:?}");
    }
}

#[test]
fn the_issue_8_bypasses_normalize_to_the_protected_path_or_are_refused() {
    for (raw, want) in [
        ("/public/../api/secret", Ok("/api/secret")),
        ("/public/%2e%2e/api/secret", Ok("/api/secret")),
        ("/public/%2E%2E/api/secret", Ok("/api/secret")),
        ("/public/.%2e/api/secret", Ok("/api/secret")),
        ("/public/./../api/secret", Ok("/api/secret")),
        ("/ws/../admin", Ok("/admin")),
        ("/public/..%2fapi/secret", Err(PathError::EscapedSlash)),
        ("/public/%2e%2e%2fapi/secret", Err(PathError::EscapedSlash)),
        ("/public/..%5Capi", Err(PathError::EscapedSlash)),
        ("/public\\..\\api", Err(PathError::EscapedSlash)),
        (
            "/public/..;/api/secret",
            Err(PathError::DotSegmentParameter),
        ),
        ("/public/.;x/api", Err(PathError::DotSegmentParameter)),
        ("/public/%2e%2e;/api", Err(PathError::DotSegmentParameter)),
    ] {
        assert_eq!(default_path(raw).as_deref(), want.as_deref(), "{raw}");
    }
}

#[test]
fn unreserved_encodings_are_decoded_and_others_uppercased() {
    for (raw, want) in [
        ("/%41%7a%30%2D%2e%5F%7E", "/Az0-._~"),
        ("/%c3%a9", "/%C3%A9"),
        ("/a%20b", "/a%20B".replace("B", "b").as_str()),
        ("/%25", "/%25"),
        ("/%252e%252e", "/%252e%252e"),
        ("/%3b", "/%3B"),
        ("/é", "/%C3%A9"),
        ("/caf%C3%A9/é", "/caf%C3%A9/%C3%A9"),
        ("/a|b^c{d}\"e", "/a%7Cb%5Ec%7Bd%7D%22e"),
        ("/a:b@c!$&'()*+,;=", "/a:b@c!$&'()*+,;="),
        ("/a;p=1/b", "/a;p=1/b"),
        ("/..a/.b./c..", "/..a/.b./c.."),
    ] {
        assert_eq!(default_path(raw).as_deref(), Ok(want), "{raw}");
    }
}

#[test]
fn malformed_percent_encodings_are_refused() {
    for raw in ["/%", "/%4", "/%zz", "/a%g1", "/%%41", "/%4/"] {
        assert_eq!(
            default_path(raw),
            Err(PathError::BadPercentEncoding),
            "{raw}"
        );
    }
}

#[test]
fn a_target_that_is_not_an_absolute_path_is_refused() {
    for raw in ["", "*", "a/b", "%2F"] {
        assert_eq!(default_path(raw), Err(PathError::NotAbsolute), "{raw:?}");
    }
}

#[test]
fn duplicate_slashes_merge_only_when_the_listener_says_so() {
    let merge = opts(true, EscapedSlashes::Reject);
    let keep = opts(false, EscapedSlashes::Reject);
    assert_eq!(path("//a///b//", merge).as_deref(), Ok("/a/b/"));
    assert_eq!(path("//a///b//", keep).as_deref(), Ok("//a///b//"));
    // Merged before dot segments: an empty segment cannot absorb a `..`.
    assert_eq!(path("/a//../b", merge).as_deref(), Ok("/b"));
    assert_eq!(path("/a//../b", keep).as_deref(), Ok("/a/b"));
}

#[test]
fn each_escaped_slash_action_does_what_the_docs_say() {
    let raw = "/a%2fb%5Cc\\d/..%2F..";
    assert_eq!(
        path(raw, opts(true, EscapedSlashes::Reject)),
        Err(PathError::EscapedSlash)
    );
    assert_eq!(
        path(raw, opts(true, EscapedSlashes::Keep)).as_deref(),
        Ok("/a%2Fb%5Cc%5Cd/..%2F..")
    );
    assert_eq!(
        path(raw, opts(true, EscapedSlashes::UnescapeAndForward)).as_deref(),
        Ok("/a/b/")
    );
    assert_eq!(
        path(
            "/x/..%2f..%2fy",
            opts(true, EscapedSlashes::UnescapeAndForward)
        )
        .as_deref(),
        Ok("/y")
    );
}

#[test]
fn a_path_that_needs_nothing_is_not_copied() {
    assert!(matches!(
        path("/ws/room-1/x_y", ListenerPaths::default()),
        Ok(Cow::Borrowed("/ws/room-1/x_y"))
    ));
}

// --- properties ----------------------------------------------------------------------------

/// Segments that exercise every rule: dots, encoded dots, parameters, empty segments,
/// encoded slashes, backslashes, other encodings and plain names.
fn segment() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "", ".", "..", "...", "%2e", "%2E", "%2e%2e", ".%2e", "%2E.", "a", "b", "a.b", "..a",
        "%41", "%7e", "%c3%a9", "%25", "%252e", "x;y", "..;", ".;p", "%2f", "%2F", "%5c", "\\",
        "..%2f", "a\\..", "%", "%g0",
    ])
}

fn raw_path() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 0..12).prop_map(|segs| format!("/{}", segs.join("/")))
}

fn any_opts() -> impl Strategy<Value = ListenerPaths> {
    (
        any::<bool>(),
        prop::sample::select(vec![
            EscapedSlashes::Reject,
            EscapedSlashes::Keep,
            EscapedSlashes::UnescapeAndForward,
        ]),
    )
        .prop_map(|(m, e)| opts(m, e))
}

/// Only the characters the WHATWG URL parser (the `url` crate) treats like RFC 3986 does:
/// no backslash (a separator there), no encoded slash, no parameters on dot segments.
fn reference_segment() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "", ".", "..", "...", "%2e", "%2E", "%2e%2e", ".%2E", "%2e.", "a", "b", "c.d", "..e", "f;g",
    ])
}

proptest! {
    #![proptest_config(crate::proptest_config())]

    #[test]
    fn normalizing_twice_changes_nothing(raw in raw_path(), o in any_opts()) {
        if let Ok(once) = path(&raw, o) {
            let twice = path(&once, o);
            prop_assert_eq!(twice.as_deref(), Ok(once.as_ref()), "raw {}", raw);
        }
    }

    #[test]
    fn the_output_starts_at_the_root_and_has_no_dot_segments(raw in raw_path(), o in any_opts()) {
        if let Ok(out) = path(&raw, o) {
            prop_assert!(out.starts_with('/'), "{} -> {}", raw, out);
            for seg in out.split('/') {
                let name = seg.split(';').next().unwrap_or(seg);
                prop_assert!(name != "." && name != "..", "{} -> {}", raw, out);
                prop_assert!(!seg.to_ascii_lowercase().contains("%2e"), "{} -> {}", raw, out);
            }
            if o.merge_slashes {
                prop_assert!(!out.contains("//"), "{} -> {}", raw, out);
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics_and_never_leaves_the_root(
        text in prop::collection::vec(0x20u8..0x7f, 0..40),
        o in any_opts(),
    ) {
        let raw = format!("/{}", String::from_utf8(text).expect("printable ASCII"));
        if let Ok(out) = path(&raw, o) {
            prop_assert!(out.starts_with('/'));
            let again = path(&out, o);
            prop_assert_eq!(again.as_deref(), Ok(out.as_ref()));
        }
    }

    #[test]
    fn a_path_under_a_prefix_stays_under_it_unless_it_climbs_out(
        segs in prop::collection::vec(prop::sample::select(vec!["a", "b", "."]), 0..8)
    ) {
        // Without `..` nothing can leave `/public/`.
        let raw = format!("/public/{}", segs.join("/"));
        let out = default_path(&raw).expect("plain segments normalize");
        prop_assert!(out.starts_with("/public/") || out == "/public", "{} -> {}", raw, out);
    }

    #[test]
    fn the_result_matches_the_url_crates_resolution(
        segs in prop::collection::vec(reference_segment(), 0..12)
    ) {
        let raw = format!("/{}", segs.join("/"));
        let ours = path(&raw, opts(false, EscapedSlashes::Reject)).expect("reference alphabet");
        let url = url::Url::parse(&format!("http://h{raw}")).expect("valid URL");
        // The URL standard leaves encoded dots outside dot segments encoded; RFC 3986 decodes
        // them (unreserved), so compare after that decoding.
        let theirs = url.path().replace("%2e", ".").replace("%2E", ".");
        prop_assert_eq!(ours.as_ref(), theirs.as_str(), "raw {}", raw);
    }
}

fn host_of(value: &str) -> Result<Option<String>, HostError> {
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::HOST, value.parse().unwrap());
    authority(Version::HTTP_11, &Uri::from_static("/"), &headers)
        .map(|a| a.map(|a| a.as_str().to_string()))
}

#[test]
fn a_host_with_a_port_that_is_not_a_number_or_an_empty_label_is_invalid() {
    for bad in [
        "example.com:abc",
        "example.com:-1",
        "example.com:65536",
        "example.com:123456",
        "..",
        ".",
        "a..example.com",
        ".example.com",
        "..:80",
    ] {
        assert_eq!(host_of(bad), Err(HostError::Invalid), "{bad}");
    }
}

#[test]
fn hosts_with_ports_trailing_dots_and_ip_literals_are_valid() {
    for good in [
        "example.com",
        "Example.COM:8080",
        "example.com.",
        "example.com.:443",
        "localhost:65535",
        "127.0.0.1:80",
        "[::1]",
        "[::1]:443",
    ] {
        assert_eq!(host_of(good), Ok(Some(good.to_string())), "{good}");
    }
}

#[test]
fn two_credentials_are_refused() {
    let head = |fields: &[(&str, &str)]| {
        let mut h = http::HeaderMap::new();
        for (name, value) in fields {
            h.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        unambiguous_fields(&h)
    };
    assert_eq!(
        head(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]),
        Err(FieldError::RepeatedAuthorization)
    );
    assert_eq!(head(&[("authorization", "Bearer a")]), Ok(()));
    assert_eq!(head(&[("cookie", "a=1"), ("cookie", "b=2")]), Ok(()));
}
