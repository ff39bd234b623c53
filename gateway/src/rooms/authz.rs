//! Room names and authorization patterns: `chat:*` (`*` matches one or more characters) and
//! `user:{sub}` (a JWT claim, inserted literally). Default deny: no pattern, no access.

use crate::auth::jwt::Claims;

/// Longest room name accepted.
pub const MAX_ROOM_LEN: usize = 128;

/// Room names: 1-128 of `A-Z a-z 0-9 : _ @ + = -` (safe as NATS subject tokens and in URLs).
pub fn valid_room(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ROOM_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_@+=-".contains(&b))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Star,
    Claim(String),
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(Vec<Part>);

impl Pattern {
    /// Parse `chat:*`, `user:{sub}`, `team:{org}:*`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '*' => {
                    if !lit.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut lit)));
                    }
                    if parts.last() == Some(&Part::Star) {
                        return Err(format!("`{text}`: `**` is not allowed"));
                    }
                    parts.push(Part::Star);
                }
                '{' => {
                    if !lit.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut lit)));
                    }
                    let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
                    if name.is_empty()
                        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    {
                        return Err(format!(
                            "`{text}`: `{{...}}` must name a claim, like `{{sub}}`"
                        ));
                    }
                    parts.push(Part::Claim(name));
                }
                c if c.is_ascii_alphanumeric() || ":_@+=-".contains(c) => lit.push(c),
                c => return Err(format!("`{text}`: `{c}` cannot appear in a room pattern")),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        if parts.is_empty() {
            return Err("empty room pattern".into());
        }
        Ok(Self(parts))
    }

    /// Whether `room` matches for a connection with `claims`. A referenced claim that is
    /// missing (or not a plain room-safe string) makes the pattern match nothing.
    pub fn matches(&self, room: &str, claims: Option<&Claims>) -> bool {
        let mut resolved: Vec<Option<String>> = Vec::with_capacity(self.0.len());
        for p in &self.0 {
            resolved.push(match p {
                Part::Literal(l) => Some(l.clone()),
                Part::Star => None,
                Part::Claim(c) => match claims.and_then(|cl| cl.get_str(c)) {
                    Some(v) if valid_room(&v) => Some(v),
                    _ => return false,
                },
            });
        }
        glob(&resolved, room.as_bytes())
    }
}

/// `parts`: Some(literal) or None (a star matching one or more bytes).
fn glob(parts: &[Option<String>], s: &[u8]) -> bool {
    match parts.split_first() {
        None => s.is_empty(),
        Some((Some(lit), rest)) => s.starts_with(lit.as_bytes()) && glob(rest, &s[lit.len()..]),
        Some((None, rest)) => (1..=s.len()).any(|i| glob(rest, &s[i..])),
    }
}

/// Any of `patterns` allows `room`.
pub fn allowed(patterns: &[Pattern], room: &str, claims: Option<&Claims>) -> bool {
    valid_room(room) && patterns.iter().any(|p| p.matches(room, claims))
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
        Pattern::parse(p)
            .unwrap()
            .matches(room, Some(&claims("alice")))
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
        assert!(!p.matches("user:", Some(&claims("alice"))));
        assert!(!p.matches("user:x", None));
    }

    #[test]
    fn a_claim_value_cannot_inject_a_wildcard() {
        let p = Pattern::parse("user:{sub}").unwrap();
        assert!(!p.matches("user:anyone", Some(&claims("*"))));
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
        for bad in ["", "a.b", "chat:**", "user:{}", "user:{su b}"] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
