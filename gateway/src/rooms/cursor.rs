//! Resume cursors for SSE (`id:` / `Last-Event-ID`) and long-polling (`cursor=`): the position
//! of every room of the request, as compact base64url JSON. A malformed cursor is ignored
//! (the client gets `recovered: false` and reloads), never an error page.
//!
//! A cursor comes from the client, so what the gateway keeps of it is bounded: the text is read
//! only up to [`MAX_CURSOR_TEXT`], and [`Cursor::retain`] keeps only the rooms of the request
//! (a forged cursor naming hundreds of other rooms would otherwise be repeated in every `id:`).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::bus::Position;

/// Positions by room.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// room -> [seq, epoch]
    #[serde(rename = "p")]
    pub positions: BTreeMap<String, (u64, String)>,
}

/// Longest cursor text decoded: the request header cap (16 KiB by default) is the real bound;
/// this one keeps the decoder's work fixed whatever the listener allows.
pub const MAX_CURSOR_TEXT: usize = 64 * 1024;

/// Why a cursor could not be read (the request then joins every room fresh).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("cursor longer than {MAX_CURSOR_TEXT} bytes")]
    TooLong,
    #[error("cursor is not base64url")]
    NotBase64,
    #[error("cursor is not a position map: {0}")]
    NotPositions(String),
}

impl Cursor {
    pub fn decode(text: &str) -> Result<Self, CursorError> {
        let text = text.trim();
        if text.len() > MAX_CURSOR_TEXT {
            return Err(CursorError::TooLong);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(text.as_bytes())
            .map_err(|_| CursorError::NotBase64)?;
        serde_json::from_slice(&bytes).map_err(|e| CursorError::NotPositions(e.to_string()))
    }

    /// Keep only the positions of `rooms` (the rooms of the request).
    pub fn retain(&mut self, rooms: &[String]) {
        self.positions.retain(|room, _| rooms.contains(room));
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn get(&self, room: &str) -> Option<Position> {
        self.positions.get(room).map(|(seq, epoch)| Position {
            seq: *seq,
            epoch: epoch.clone(),
        })
    }

    pub fn set(&mut self, room: &str, seq: u64, epoch: &str) {
        let entry = self
            .positions
            .entry(room.to_string())
            .or_insert((0, String::new()));
        if seq >= entry.0 || entry.1 != epoch {
            *entry = (seq, epoch.to_string());
        }
    }
}

/// The rooms of an SSE/long-poll request: `rooms=a,b` (repeatable).
pub fn rooms_param(query: Option<&str>) -> Vec<String> {
    let mut rooms: Vec<String> = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "rooms" || k == "room")
        .flat_map(|(_, v)| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect();
    rooms.sort();
    rooms.dedup();
    rooms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let mut c = Cursor::default();
        c.set("a", 4, "e1");
        c.set("b", 9, "e1");
        let d = Cursor::decode(&c.encode()).expect("own encoding decodes");
        assert_eq!(d, c);
        assert_eq!(
            d.get("a"),
            Some(Position {
                seq: 4,
                epoch: "e1".into()
            })
        );
    }

    #[test]
    fn positions_never_go_backwards_within_an_epoch() {
        let mut c = Cursor::default();
        c.set("a", 5, "e");
        c.set("a", 3, "e");
        assert_eq!(c.get("a").unwrap().seq, 5);
        c.set("a", 1, "e2");
        assert_eq!(
            c.get("a").unwrap(),
            Position {
                seq: 1,
                epoch: "e2".into()
            }
        );
    }

    #[test]
    fn garbage_cursors_decode_to_nothing() {
        for bad in ["", "!!!", "bm90IGpzb24", "e30x"] {
            assert!(
                !matches!(Cursor::decode(bad), Ok(c) if !c.positions.is_empty()),
                "{bad}"
            );
        }
        assert_eq!(Cursor::decode("!!!"), Err(CursorError::NotBase64));
        assert_eq!(
            Cursor::decode(&"A".repeat(MAX_CURSOR_TEXT + 4)),
            Err(CursorError::TooLong)
        );
    }

    #[test]
    fn a_cursor_keeps_only_the_rooms_of_the_request() {
        let mut c = Cursor::default();
        for r in ["a", "b", "forged1", "forged2"] {
            c.set(r, 1, "e");
        }
        c.retain(&["a".to_string(), "b".to_string(), "c".to_string()]);
        assert_eq!(c.positions.keys().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn rooms_are_read_from_comma_lists_and_repeats() {
        assert_eq!(
            rooms_param(Some("rooms=b,a&rooms=c&x=1&room=a")),
            vec!["a", "b", "c"]
        );
        assert!(rooms_param(None).is_empty());
    }
}
