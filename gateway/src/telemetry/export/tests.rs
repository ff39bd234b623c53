use super::*;

fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |k| {
        pairs
            .iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| (*v).to_string())
    }
}

#[test]
fn nothing_is_exported_without_an_endpoint() {
    assert_eq!(ExportSettings::from_env(env(&[])).unwrap(), None);
    assert_eq!(
        ExportSettings::from_env(env(&[(ENDPOINT, " ")])).unwrap(),
        None
    );
}

#[test]
fn the_generic_endpoint_gets_the_traces_path_appended() {
    for base in ["http://collector:4318", "http://collector:4318/"] {
        let s = ExportSettings::from_env(move |k| (k == ENDPOINT).then(|| base.to_string()))
            .unwrap()
            .unwrap();
        assert_eq!(s.endpoint, "http://collector:4318/v1/traces", "{base}");
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
    }
}

#[test]
fn the_traces_endpoint_is_used_as_is_and_wins() {
    let s = ExportSettings::from_env(env(&[
        (ENDPOINT, "http://generic:4318"),
        (TRACES_ENDPOINT, "https://traces.example.com/otlp/spans"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(s.endpoint, "https://traces.example.com/otlp/spans");
}

#[test]
fn endpoints_that_are_not_http_urls_are_refused() {
    for bad in [
        "collector:4318",
        "localhost",
        "grpc://c:4317",
        "http://",
        "://x",
    ] {
        let e = ExportSettings::from_env(move |k| (k == ENDPOINT).then(|| bad.to_string()))
            .unwrap_err();
        assert!(
            e.to_string().starts_with("OTEL_EXPORTER_OTLP_ENDPOINT: "),
            "{bad}: {e}"
        );
    }
}

#[test]
fn only_http_protobuf_is_accepted_as_protocol() {
    let e = ExportSettings::from_env(env(&[(ENDPOINT, "http://c:4317"), (PROTOCOL, "grpc")]))
        .unwrap_err();
    assert!(e.to_string().contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{e}");
    // The signal-specific variable wins over the generic one.
    assert!(
        ExportSettings::from_env(env(&[
            (ENDPOINT, "http://c:4318"),
            (TRACES_PROTOCOL, "http/protobuf"),
            (PROTOCOL, "grpc"),
        ]))
        .is_ok()
    );
}

#[test]
fn the_timeout_is_read_in_milliseconds() {
    let s = ExportSettings::from_env(env(&[(ENDPOINT, "http://c:4318"), (TIMEOUT, "2500")]))
        .unwrap()
        .unwrap();
    assert_eq!(s.timeout, Duration::from_millis(2500));
    assert!(
        ExportSettings::from_env(env(&[(ENDPOINT, "http://c:4318"), (TIMEOUT, "2s")])).is_err()
    );
}

fn attr(r: &Resource, key: &'static str) -> Option<String> {
    r.get(&opentelemetry::Key::from_static_str(key))
        .map(|v| v.to_string())
}

#[test]
fn the_resource_names_the_service_and_the_pod() {
    let r = resource(&env(&[("POD_NAME", "gw-0"), ("POD_NAMESPACE", "edge")]));
    assert_eq!(attr(&r, "k8s.pod.name").as_deref(), Some("gw-0"));
    assert_eq!(attr(&r, "k8s.namespace.name").as_deref(), Some("edge"));
    // OTEL_SERVICE_NAME is not set in the test environment: our default applies.
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        assert_eq!(
            attr(&r, "service.name").as_deref(),
            Some(DEFAULT_SERVICE_NAME)
        );
    }
    let r = resource(&env(&[]));
    assert_eq!(attr(&r, "k8s.pod.name"), None);
}
