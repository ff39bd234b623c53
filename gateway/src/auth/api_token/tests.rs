use http::{HeaderMap, HeaderValue, header};
use switchboard_config::GatewayConfig;

use super::{ApiRefusal, authorize_api, bearer};

fn headers(authorizations: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for a in authorizations {
        h.append(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
    }
    h
}

fn config(publish_api: &str) -> GatewayConfig {
    GatewayConfig::from_yaml(&format!(
        "apiVersion: switchboard.dev/v1alpha1\nkind: GatewayConfig\nlisteners: [{{name: public, address: '127.0.0.1:0'}}]\n{publish_api}routes: []\n"
    ))
    .unwrap()
}

#[test]
fn a_bearer_token_is_read_whatever_the_case_of_its_scheme() {
    for value in ["Bearer t0k", "bearer t0k", "BEARER  t0k ", " Bearer t0k"] {
        assert_eq!(bearer(&headers(&[value])), Ok(Some("t0k")), "{value:?}");
    }
    for value in ["Basic dXNlcg==", "Bearer", "Bearer ", "t0k", "Bearert0k"] {
        assert_eq!(bearer(&headers(&[value])), Ok(None), "{value:?}");
    }
    assert_eq!(bearer(&headers(&[])), Ok(None));
}

#[test]
fn two_authorization_headers_are_refused_rather_than_the_first_one_read() {
    let cfg = config("publishApi: {token: right-token-of-16-chars}\n");
    let h = headers(&["Bearer right-token-of-16-chars"]);
    assert_eq!(authorize_api(&cfg, &h), Ok(1000));
    let h = headers(&["Bearer right-token-of-16-chars", "Bearer wrong"]);
    assert_eq!(authorize_api(&cfg, &h), Err(ApiRefusal::Ambiguous));
    assert_eq!(
        ApiRefusal::Ambiguous.answer().0,
        http::StatusCode::BAD_REQUEST
    );
    let h = headers(&["bearer wrong"]);
    assert_eq!(authorize_api(&cfg, &h), Err(ApiRefusal::Unauthorized));
    assert_eq!(
        authorize_api(&config(""), &headers(&["Bearer right-token-of-16-chars"])),
        Err(ApiRefusal::Disabled)
    );
}
