//! Room names and room authorization patterns: the one grammar the config validator, the
//! operator and the gateway's rooms authorization all use.
//!
//! A room name is 1-128 of `A-Z a-z 0-9 : _ @ + = -` (safe as a NATS subject token and in a
//! URL). A pattern is made of room characters, `*` (one or more characters, never `**`) and
//! `{claim}` (the value of that JWT claim, inserted literally; claim names are `A-Z a-z 0-9 _`).
//!
//! ```
//! use switchboard_config::room::Pattern;
//! let p = Pattern::parse("team:{org}:*").unwrap();
//! assert!(p.matches("team:acme:general", |c| (c == "org").then(|| "acme".to_string())));
//! assert!(Pattern::parse("user:{sub").is_err());
//! ```

/// Longest room name accepted.
pub const MAX_ROOM_LEN: usize = 128;

/// The characters room names are made of.
pub fn room_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b":_@+=-".contains(&b)
}

/// Room names: 1-[`MAX_ROOM_LEN`] room characters.
pub fn valid_room(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_ROOM_LEN && name.bytes().all(room_char)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Star,
    Claim(String),
}

/// A parsed room pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(Vec<Part>);

impl Pattern {
    /// Parse `chat:*`, `user:{sub}`, `team:{org}:*`. The error says what is wrong in words a
    /// user can act on (it quotes the pattern).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("an empty room pattern matches nothing".into());
        }
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            rest = &rest[c.len_utf8()..];
            match c {
                '*' => {
                    if !lit.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut lit)));
                    }
                    if parts.last() == Some(&Part::Star) {
                        return Err(format!(
                            "`{text}`: `**` is not allowed (`*` already matches one or more characters)"
                        ));
                    }
                    parts.push(Part::Star);
                }
                '{' => {
                    if !lit.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut lit)));
                    }
                    let Some((name, after)) = rest.split_once('}') else {
                        return Err(format!("`{text}`: `{{` without its `}}`"));
                    };
                    if name.is_empty()
                        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    {
                        return Err(format!(
                            "`{text}`: `{{...}}` must name a claim, like `{{sub}}`"
                        ));
                    }
                    parts.push(Part::Claim(name.to_owned()));
                    rest = after;
                }
                c if c.is_ascii() && room_char(c as u8) => lit.push(c),
                c => {
                    return Err(format!(
                        "`{text}`: `{c}` cannot appear in a room pattern (use A-Z a-z 0-9 : _ @ + = -, `*` and `{{claim}}`)"
                    ));
                }
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        Ok(Self(parts))
    }

    /// Whether `room` matches, with `claim(name)` giving a claim's value as text. A referenced
    /// claim that is missing (or not a valid room name itself) makes the pattern match nothing,
    /// so a claim can never inject a wildcard.
    pub fn matches(&self, room: &str, claim: impl Fn(&str) -> Option<String>) -> bool {
        let mut resolved: Vec<Option<String>> = Vec::with_capacity(self.0.len());
        for p in &self.0 {
            resolved.push(match p {
                Part::Literal(l) => Some(l.clone()),
                Part::Star => None,
                Part::Claim(c) => match claim(c) {
                    Some(v) if valid_room(&v) => Some(v),
                    _ => return false,
                },
            });
        }
        glob(&resolved, room.as_bytes())
    }
}

impl Pattern {
    /// The claims this pattern names (`team:{org}:*` names `org`).
    pub fn claims(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|p| match p {
            Part::Claim(c) => Some(c.as_str()),
            _ => None,
        })
    }

    /// For a user room pattern (literal text around exactly one `{sub}`, no `*`, no other
    /// claim): the text before and after `{sub}`. `None` for any other pattern.
    pub fn user_affixes(&self) -> Option<(String, String)> {
        let mut before = String::new();
        let mut after = String::new();
        let mut seen = false;
        for part in &self.0 {
            match part {
                Part::Literal(l) if seen => after.push_str(l),
                Part::Literal(l) => before.push_str(l),
                Part::Claim(c) if c == "sub" && !seen => seen = true,
                _ => return None,
            }
        }
        seen.then_some((before, after))
    }

    /// The user a user room pattern (see [`Self::user_affixes`]) names in `room`, if it fits.
    pub fn user_of(&self, room: &str) -> Option<String> {
        let (before, after) = self.user_affixes()?;
        let user = room
            .strip_prefix(before.as_str())?
            .strip_suffix(after.as_str())?;
        (!user.is_empty() && valid_room(user)).then(|| user.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_patterns_parse() {
        for good in [
            "chat:*",
            "*",
            "user:{sub}",
            "team:{org}:*",
            "a@b+c=d-e_f:1",
            "*:{sub}:*",
        ] {
            assert!(Pattern::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn bad_patterns_are_refused_with_a_reason_naming_the_pattern() {
        for (bad, why) in [
            ("", "empty room pattern"),
            ("a.b", "`.` cannot appear"),
            ("chat:**", "`**` is not allowed"),
            ("user:{}", "must name a claim"),
            ("user:{su b}", "must name a claim"),
            ("user:{sub", "without its `}`"),
            ("caf\u{e9}", "cannot appear"),
            ("a}b", "`}` cannot appear"),
        ] {
            let err = Pattern::parse(bad).expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_user_room_pattern_names_the_user_of_a_room() {
        let p = Pattern::parse("inbox:{sub}:n").unwrap();
        assert_eq!(p.user_of("inbox:alice:n").as_deref(), Some("alice"));
        assert_eq!(p.user_of("inbox::n"), None);
        assert_eq!(p.user_of("other:alice:n"), None);
        assert!(Pattern::parse("inbox:*").unwrap().user_affixes().is_none());
        assert!(
            Pattern::parse("inbox:{org}")
                .unwrap()
                .user_affixes()
                .is_none()
        );
        assert!(
            Pattern::parse("inbox:{sub}:{sub}")
                .unwrap()
                .user_affixes()
                .is_none()
        );
    }

    #[test]
    fn a_claim_value_cannot_inject_a_wildcard() {
        let p = Pattern::parse("user:{sub}").unwrap();
        assert!(!p.matches("user:anyone", |_| Some("*".into())));
        assert!(p.matches("user:alice", |_| Some("alice".into())));
        assert!(!p.matches("user:alice", |_| None));
    }
}
