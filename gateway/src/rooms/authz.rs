//! Room names and authorization patterns: `chat:*` (`*` matches one or more characters) and
//! `user:{sub}` (a JWT claim, inserted literally). Default deny: no pattern, no access.

use crate::auth::jwt::Claims;

pub use switchboard_config::room::{MAX_ROOM_LEN, Pattern, valid_room};

/// Whether `pattern` allows `room` for a connection with `claims` (a `{claim}` the token does
/// not carry matches nothing).
pub fn matches(pattern: &Pattern, room: &str, claims: Option<&Claims>) -> bool {
    pattern.matches(room, |name| claims.and_then(|c| claim(c, name)))
}

/// A claim as text; a string `sub` from [`Claims::sub`] (a connection's claims keep it only
/// there, see `RoomsPolicy::session_claims`).
fn claim(claims: &Claims, name: &str) -> Option<String> {
    match &claims.sub {
        Some(sub) if name == "sub" => Some(sub.clone()),
        _ => claims.get_str(name),
    }
}

/// Any of `patterns` allows `room`.
pub fn allowed(patterns: &[Pattern], room: &str, claims: Option<&Claims>) -> bool {
    valid_room(room) && patterns.iter().any(|p| matches(p, room, claims))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str) -> Claims {
        let mut raw = serde_json::Map::new();
        raw.insert("sub".into(), sub.into());
        raw.insert("org".into(), "acme".into());
        Claims {
            sub: Some(sub.into()),
            exp: None,
            raw,
        }
    }

    fn ok(p: &str, room: &str) -> bool {
        matches(&Pattern::parse(p).unwrap(), room, Some(&claims("alice")))
    }

    #[test]
    fn star_matches_one_or_more_characters() {
        assert!(ok("chat:*", "chat:lobby"));
        assert!(!ok("chat:*", "chat:"));
        assert!(!ok("chat:*", "chatx"));
        assert!(ok("*", "anything"));
    }

    #[test]
    fn claim_placeholders_are_filled_from_the_token() {
        assert!(ok("user:{sub}", "user:alice"));
        assert!(!ok("user:{sub}", "user:bob"));
        assert!(ok("team:{org}:*", "team:acme:general"));
        assert!(!ok("team:{org}:*", "team:other:general"));
    }

    #[test]
    fn a_missing_claim_matches_nothing() {
        let p = Pattern::parse("user:{tenant}").unwrap();
        assert!(!matches(&p, "user:", Some(&claims("alice"))));
        assert!(!matches(&p, "user:x", None));
    }

    #[test]
    fn a_claim_value_cannot_inject_a_wildcard() {
        let p = Pattern::parse("user:{sub}").unwrap();
        assert!(!matches(&p, "user:anyone", Some(&claims("*"))));
    }

    #[test]
    fn no_patterns_means_no_access() {
        assert!(!allowed(&[], "chat:lobby", Some(&claims("alice"))));
    }

    #[test]
    fn invalid_room_names_are_never_allowed() {
        let p = vec![Pattern::parse("*").unwrap()];
        for bad in ["", "a.b", "a b", "a*", &"x".repeat(129)] {
            assert!(!allowed(&p, bad, None), "{bad:?}");
        }
    }

    #[test]
    fn bad_patterns_are_refused_with_a_reason() {
        for bad in ["", "a.b", "chat:**", "user:{}", "user:{su b}", "user:{sub"] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
