use super::*;

fn compile_after(
    yaml_routes: &str,
    read_file: &dyn Fn(&str) -> std::io::Result<Vec<u8>>,
    previous: Option<&RouteTable>,
) -> RouteTable {
    let cfg = GatewayConfig::from_yaml(&format!(
            "apiVersion: switchboard.dev/v1alpha1\nkind: GatewayConfig\nlisteners: [{{name: p, address: '127.0.0.1:1'}}]\nroutes: {yaml_routes}"
        ))
        .unwrap();
    let jwks = JwksRegistry::new();
    let admission = AdmissionRegistry::default();
    let backends = BackendRegistry::default();
    RouteTable::compile(
        &cfg,
        &CompileContext {
            jwks: &jwks,
            admission: &admission,
            backends: &backends,
            read_file,
        },
        previous,
    )
}

fn compile(yaml_routes: &str, read_file: &dyn Fn(&str) -> std::io::Result<Vec<u8>>) -> RouteTable {
    compile_after(yaml_routes, read_file, None)
}

fn no_files(_: &str) -> std::io::Result<Vec<u8>> {
    Err(std::io::ErrorKind::NotFound.into())
}

fn table(yaml_routes: &str) -> RouteTable {
    let t = compile(yaml_routes, &no_files);
    assert_eq!(t.failures(), &[]);
    t
}

#[test]
fn a_signature_secret_file_shorter_than_32_bytes_is_refused() {
    let route = "[{name: a, path: {value: /}, proxy: {backends: [], signature: {secretFile: /s}}}]";
    let t = compile(route, &|_| Ok(b"short-secret\n".to_vec()));
    let problems = &t.failures()[0].problems;
    assert!(
        problems
            .iter()
            .any(|p| p.message.contains("holds 12 bytes")),
        "{problems:?}"
    );
    assert!(
        compile(route, &|_| Ok(vec![b'k'; 32]))
            .failures()
            .is_empty()
    );
}

/// The fixture RSA public key with its second half cut off (a bad copy into a Secret).
const TRUNCATED_PEM: &str = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA37T7hYwshTgezOPI6PgE\nzcmTM99VIqndFArXLD3i923ydsFsrXF3k4rcvLD9ZGHM5u2nFPvW5egZPqa22b1R\n";

fn broken_and_good(broken_pem: &str) -> String {
    format!(
            "[{{name: broken, path: {{value: /broken}}, jwt: {{keys: [{{inline: {{algorithm: RS256, pem: {broken_pem:?}}}}}]}}, proxy: {{backends: []}}}},
              {{name: good, path: {{value: /good}}, proxy: {{backends: []}}}}]"
        )
}

#[test]
fn a_route_that_fails_to_compile_does_not_keep_the_others_out() {
    let t = compile(&broken_and_good(TRUNCATED_PEM), &no_files);
    assert_eq!(name(&t, None, "/good/x").as_deref(), Some("good"));
    assert_eq!(
        t.failures(),
        &[RouteFailure {
            route: "broken".into(),
            problems: vec![Problem::new(
                "routes[0].jwt.keys[0]",
                "the PEM is not a public key usable with RS256"
            )],
            serving: Serving::None,
        }]
    );
    assert_eq!(t.len(), 1);
}

#[test]
fn a_route_that_never_compiled_answers_not_programmed_instead_of_a_shorter_route() {
    let routes = format!(
        "[{{name: root, path: {{value: /}}, proxy: {{backends: []}}}}, {}]",
        broken_and_good(TRUNCATED_PEM)
            .trim_start_matches('[')
            .trim_end_matches(']')
    );
    let t = compile(&routes, &no_files);
    assert!(matches!(
        t.lookup(None, "/broken/x"),
        Some(Matched::NotProgrammed(n)) if n == "broken"
    ));
    assert_eq!(name(&t, None, "/elsewhere").as_deref(), Some("root"));
}

#[test]
fn a_route_that_breaks_on_reload_keeps_its_last_good_version_and_the_others_update() {
    let good_pem = include_str!("../../tests/fixtures/keys/rsa.pub.pem");
    let first = compile(&broken_and_good(good_pem), &no_files);
    assert!(first.failures().is_empty());
    let before = match first.lookup(None, "/broken") {
        Some(Matched::Route(r)) => r,
        _ => panic!("the route compiled"),
    };

    // Generation 2: the key breaks, and the good route moves to a new path.
    let edited = broken_and_good(TRUNCATED_PEM).replace("/good", "/good-v2");
    let second = compile_after(&edited, &no_files, Some(&first));
    assert!(
        matches!(second.lookup(None, "/broken"), Some(Matched::Route(r)) if Arc::ptr_eq(&r, &before)),
        "the last good version serves"
    );
    assert_eq!(name(&second, None, "/good-v2").as_deref(), Some("good"));
    assert!(name(&second, None, "/good").is_none(), "the edit applied");
    assert_eq!(second.failures().len(), 1);
    assert_eq!(
        second.failures()[0].serving,
        Serving::LastGood { generation: 0 }
    );

    // Still broken a reload later: still the same last good version.
    let third = compile_after(&edited, &no_files, Some(&second));
    assert!(
        matches!(third.lookup(None, "/broken"), Some(Matched::Route(r)) if Arc::ptr_eq(&r, &before))
    );

    // Fixed: the new version replaces it and the failure is gone.
    let fixed = compile_after(&broken_and_good(good_pem), &no_files, Some(&third));
    assert!(fixed.failures().is_empty());
    assert!(
        matches!(fixed.lookup(None, "/broken"), Some(Matched::Route(r)) if !Arc::ptr_eq(&r, &before))
    );
}

#[test]
fn a_route_kept_at_its_last_good_version_also_holds_the_new_path_it_failed_to_take() {
    let good_pem = include_str!("../../tests/fixtures/keys/rsa.pub.pem");
    let with_root = |routes: String| {
        format!(
            "[{{name: root, path: {{value: /}}, proxy: {{backends: []}}}}, {}]",
            routes.trim_start_matches('[').trim_end_matches(']')
        )
    };
    let first = compile(&with_root(broken_and_good(good_pem)), &no_files);
    // The broken route's new version moves it to /moved and fails: /moved must not fall
    // through to `root` (other auth), and the old path keeps its last good version.
    let edited = with_root(broken_and_good(TRUNCATED_PEM).replace("/broken", "/moved"));
    let second = compile_after(&edited, &no_files, Some(&first));
    assert!(
        matches!(second.lookup(None, "/moved/x"), Some(Matched::NotProgrammed(n)) if n == "broken"),
        "the new path is held for the route, not served by a shorter one"
    );
    assert_eq!(name(&second, None, "/broken").as_deref(), Some("broken"));
}

#[test]
fn a_kept_last_good_route_loses_a_tie_to_a_route_of_the_new_generation() {
    let good_pem = include_str!("../../tests/fixtures/keys/rsa.pub.pem");
    let first = compile(&broken_and_good(good_pem), &no_files);
    // The broken route moves to /elsewhere; a new route takes over /broken.
    let routes = format!(
        "[{}, {{name: heir, path: {{value: /broken}}, proxy: {{backends: []}}}}]",
        broken_and_good(TRUNCATED_PEM)
            .replace("value: /broken", "value: /elsewhere")
            .trim_start_matches('[')
            .trim_end_matches(']')
    );
    let second = compile_after(&routes, &no_files, Some(&first));
    assert_eq!(name(&second, None, "/broken").as_deref(), Some("heir"));
}

fn name(t: &RouteTable, host: Option<&str>, path: &str) -> Option<String> {
    match t.lookup(host, path)? {
        Matched::Route(r) => Some(r.cfg.name.clone()),
        Matched::NotProgrammed(n) => panic!("{n} is not programmed"),
    }
}

const ROUTES: &str = "[
      {name: any-root, path: {value: /}, proxy: {backends: []}},
      {name: any-ws, path: {value: /ws}, proxy: {backends: []}},
      {name: exact-ws, path: {type: Exact, value: /ws}, proxy: {backends: []}},
      {name: chat, hosts: [chat.example.com], path: {value: /ws}, proxy: {backends: []}},
      {name: wild, hosts: ['*.example.com'], path: {value: /ws}, proxy: {backends: []}}
    ]";

#[test]
fn longest_prefix_wins_at_segment_boundaries() {
    let t = table(ROUTES);
    assert_eq!(name(&t, None, "/ws/room/1").as_deref(), Some("any-ws"));
    assert_eq!(name(&t, None, "/wsx").as_deref(), Some("any-root"));
    assert_eq!(name(&t, None, "/other").as_deref(), Some("any-root"));
}

#[test]
fn exact_beats_prefix_of_the_same_path() {
    assert_eq!(
        name(&table(ROUTES), None, "/ws").as_deref(),
        Some("exact-ws")
    );
}

#[test]
fn exact_host_beats_wildcard_beats_any_host() {
    let t = table(ROUTES);
    assert_eq!(
        name(&t, Some("Chat.Example.com:443"), "/ws/x").as_deref(),
        Some("chat")
    );
    assert_eq!(
        name(&t, Some("other.example.com"), "/ws/x").as_deref(),
        Some("wild")
    );
    assert_eq!(
        name(&t, Some("example.com"), "/ws/x").as_deref(),
        Some("any-ws")
    );
}

#[test]
fn no_matching_route_is_none() {
    let t = table("[{name: a, hosts: [a.example.com], path: {value: /ws}, proxy: {backends: []}}]");
    assert!(t.lookup(Some("b.example.com"), "/ws").is_none());
    assert!(t.lookup(None, "/ws").is_none());
    assert!(t.lookup(Some("a.example.com"), "/").is_none());
}

#[test]
fn hosts_are_normalized() {
    assert_eq!(normalize_host("Example.COM:8080"), "example.com");
    assert_eq!(normalize_host("example.com."), "example.com");
    assert_eq!(normalize_host("[::1]:80"), "::1");
}

fn jwt_route() -> Arc<CompiledRoute> {
    let pem = include_str!("../../tests/fixtures/keys/rsa.pub.pem");
    let t = table(&format!(
        "[{{name: a, path: {{value: /}}, jwt: {{keys: [{{inline: {{algorithm: RS256, pem: {pem:?}}}}}]}}, proxy: {{backends: []}}}}]"
    ));
    match t.lookup(None, "/") {
        Some(Matched::Route(r)) => r,
        _ => panic!("the route compiled"),
    }
}

fn expiring_at(exp: u64) -> crate::auth::jwt::Claims {
    crate::auth::jwt::Claims {
        sub: Some("alice".into()),
        exp: Some(exp),
        raw: Default::default(),
    }
}

#[test]
fn a_connection_closes_when_its_token_expires() {
    let route = jwt_route();
    let exp = crate::http::unix_now() + 60;
    let at = route.close_at_expiry(Some(&expiring_at(exp))).unwrap();
    let left = at - tokio::time::Instant::now();
    assert!(
        left <= Duration::from_secs(61) && left >= Duration::from_secs(58),
        "{left:?}"
    );
}

#[test]
fn a_token_expiring_beyond_the_clocks_range_gets_a_far_deadline_instead_of_a_panic() {
    // A validly signed `exp` of 2^63 s or more: `Instant + Duration` would overflow (a panic
    // in the connection's task, seen from outside as an upgrade with no answer).
    let route = jwt_route();
    let decades = Duration::from_secs(99 * 365 * 86400);
    for exp in [1 << 63, u64::MAX - 1, u64::MAX] {
        let at = route
            .close_at_expiry(Some(&expiring_at(exp)))
            .expect("a deadline");
        assert!(at - tokio::time::Instant::now() > decades, "{exp}");
        // Timers add to it (tokio rounds a deadline up to its next millisecond).
        assert!(
            at.checked_add(Duration::from_secs(86_400)).is_some(),
            "{exp}"
        );
    }
}
