use super::pick_namespace;

#[test]
fn a_call_naming_no_namespace_where_none_serves_room_messages_is_told_so() {
    let (status, body) = pick_namespace(None, &[]).unwrap_err();
    assert_eq!(status, http::StatusCode::NOT_FOUND);
    assert!(
        body["error"].as_str().unwrap().contains("documents API"),
        "{body}"
    );
    let two = [("a".to_string(), None), ("b".to_string(), None)];
    assert_eq!(
        pick_namespace(None, &two).unwrap_err().0,
        http::StatusCode::BAD_REQUEST
    );
    assert_eq!(pick_namespace(None, &two[..1]).unwrap(), "a");
}
