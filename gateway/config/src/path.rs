//! Path normalization of a request target (RFC 3986 §5.2.4, §6.2.2), as each listener's
//! [`ListenerPaths`] sets it. Pure. The gateway normalizes every request path with [`path`]
//! before routing; validation checks every route's path against it, so a route's path is
//! always one a request can have.
//!
//! Steps, in order (documented in `docs/config.md`, "Path normalization"):
//! 1. Percent-encodings are checked (`%` + two hex digits, else 400); an encoding of an
//!    unreserved character (RFC 3986 §2.3: `A-Z a-z 0-9 - . _ ~`) is decoded (§6.2.2.2), every
//!    other encoding is kept with uppercase hex digits (§6.2.2.1), and a raw byte a URI may not
//!    hold (UTF-8 sent unencoded, `|`, `{`, `"`...) is percent-encoded.
//! 2. Encoded slashes (`%2F`), encoded backslashes (`%5C`) and raw backslashes follow the
//!    listener's [`EscapedSlashes`] action: refused (the default), kept as `%2F` / `%5C` (never a
//!    segment separator), or turned into `/` before the dot segments are resolved.
//! 3. With `mergeSlashes` (the default) runs of `/` become one.
//! 4. A dot segment carrying a path parameter (`..;x`, `.;`: Tomcat and Jetty resolve these as
//!    dot segments) is refused.
//! 5. Dot segments are removed (RFC 3986 §5.2.4, [`remove_dot_segments`]).

use std::borrow::Cow;

use crate::{EscapedSlashes, ListenerPaths};

/// Why a request path cannot be normalized safely (each is a 400 `bad_request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The target does not start with `/`.
    #[error("request target is not an absolute path")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-encoding in the path")]
    BadPercentEncoding,
    /// `%2F`, `%5C` or a raw backslash where the listener refuses them.
    #[error("encoded slash or backslash in the path")]
    EscapedSlash,
    /// `..;x` or `.;x`: a dot segment some servers resolve and others do not.
    #[error("path parameter on a dot segment")]
    DotSegmentParameter,
}

impl PathError {
    /// The reason a refusal carries (the same words as `Display`).
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotAbsolute => "request target is not an absolute path",
            Self::BadPercentEncoding => "malformed percent-encoding in the path",
            Self::EscapedSlash => "encoded slash or backslash in the path",
            Self::DotSegmentParameter => "path parameter on a dot segment",
        }
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §2.3 unreserved characters.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 §2.2 reserved characters (gen-delims and sub-delims): their raw and encoded forms
/// differ in meaning, so each stays as it came.
fn is_reserved(b: u8) -> bool {
    b":/?#[]@!$&'()*+,;=".contains(&b)
}

/// A raw byte that a URI may not hold as it is (RFC 3986 §2): not ASCII, a control, a space,
/// `"`, `<`, `>`, `\`, `^`, a backtick, `{`, `|`, `}`. Such bytes are percent-encoded, as a
/// browser sends them, so that a path has one spelling.
fn needs_encoding(b: u8) -> bool {
    !(is_unreserved(b) || is_reserved(b) || b == b'%')
}

/// Whether `raw` can need any change at all (the common case does not, and is not copied).
fn needs_work(raw: &str, opts: ListenerPaths) -> bool {
    raw.bytes()
        .any(|b| matches!(b, b'%' | b'\\' | b'.') || needs_encoding(b))
        || (opts.merge_slashes && raw.contains("//"))
}

/// Normalize the path of a request target (no query). The result starts with `/`, has no dot
/// segments, and normalizing it again changes nothing.
pub fn path(raw: &str, opts: ListenerPaths) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if !needs_work(raw, opts) {
        return Ok(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    let push = |out: &mut Vec<u8>, b: u8| {
        if !(opts.merge_slashes && b == b'/' && out.last() == Some(&b'/')) {
            out.push(b);
        }
    };
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let (decoded, escaped) = if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_value);
            let lo = bytes.get(i + 2).copied().and_then(hex_value);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::BadPercentEncoding);
            };
            i += 3;
            (hi << 4 | lo, true)
        } else {
            i += 1;
            (b, false)
        };
        match decoded {
            b'/' if !escaped => push(&mut out, b'/'),
            b'/' | b'\\' => match opts.escaped_slashes {
                EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashes::Keep => {
                    out.extend_from_slice(if decoded == b'/' { b"%2F" } else { b"%5C" })
                }
                EscapedSlashes::UnescapeAndForward => push(&mut out, b'/'),
            },
            // A byte a URI may not hold raw (UTF-8 sent as it is, `|`, `{`...: some clients
            // send them) is percent-encoded, as a browser sends it: one spelling of each path.
            d if (escaped && !is_unreserved(d)) || (!escaped && needs_encoding(d)) => {
                out.extend_from_slice(&[b'%', HEX[usize::from(d >> 4)], HEX[usize::from(d & 15)]]);
            }
            d => out.push(d),
        }
    }
    // Every byte written is ASCII, so this is UTF-8; the error arm is unreachable but handled
    // rather than unwrapped.
    let decoded = String::from_utf8(out).map_err(|_| PathError::BadPercentEncoding)?;
    if decoded.split('/').any(|segment| {
        segment
            .split_once(';')
            .is_some_and(|(name, _)| name == "." || name == "..")
    }) {
        return Err(PathError::DotSegmentParameter);
    }
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

/// RFC 3986 §5.2.4 "Remove Dot Segments", step by step as the RFC states it (input buffer,
/// output buffer, rules A to E). For an input starting with `/` the output starts with `/`.
pub fn remove_dot_segments(path: &str) -> String {
    let mut input = path;
    let mut output = String::with_capacity(path.len());
    while !input.is_empty() {
        // A: a prefix of "../" or "./" is removed.
        if let Some(rest) = input.strip_prefix("../") {
            input = rest;
        } else if let Some(rest) = input.strip_prefix("./") {
            input = rest;
        // B: a prefix of "/./" or "/." (a complete segment) becomes "/".
        } else if input.starts_with("/./") {
            input = &input[2..];
        } else if input == "/." {
            input = "/";
        // C: a prefix of "/../" or "/.." (complete) becomes "/", and the last segment of the
        // output (with its preceding "/", if any) is removed.
        } else if input.starts_with("/../") {
            input = &input[3..];
            pop_segment(&mut output);
        } else if input == "/.." {
            input = "/";
            pop_segment(&mut output);
        // D: "." or ".." alone is removed.
        } else if input == "." || input == ".." {
            input = "";
        // E: the first segment (with its leading "/", if any) moves to the output.
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            output.push_str(&input[..end]);
            input = &input[end..];
        }
    }
    output
}

fn pop_segment(output: &mut String) {
    match output.rfind('/') {
        Some(i) => output.truncate(i),
        None => output.clear(),
    }
}
