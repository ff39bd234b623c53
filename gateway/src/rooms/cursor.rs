//! Resume cursors for SSE (`id:` / `Last-Event-ID`) and long-polling (`cursor=`): the position
//! of every room of the request, base64url. A malformed cursor is ignored (the client gets
//! `recovered: false` and reloads), never an error page.
//!
//! The gateway writes them compact (version 2), since a browser sends one back in a header
//! (`Last-Event-ID`) that must fit the request's header limit (and a proxy's line limit): one
//! byte `2`; the epochs, each once (count, then length and bytes); then per room the first
//! [`ROOM_TAG`] bytes of the SHA-256 of its name, the index of its epoch and its seq (varints).
//! Rooms are named by the request itself (`rooms=`), so the tags only need to tell them apart:
//! 256 rooms take about 2 KiB whatever their names. The version 1 form, base64url JSON
//! `{"p":{"<room>":[seq,"<epoch>"]}}`, is still read (what an older gateway wrote, and what a
//! client may build).
//!
//! A cursor comes from the client, so what the gateway keeps of it is bounded: the text is read
//! only up to [`MAX_CURSOR_TEXT`], and only the rooms of the request are kept (a forged cursor
//! naming hundreds of other rooms would otherwise be repeated in every `id:`).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

/// The first byte of a version 2 cursor (a version 1 cursor is JSON: it starts with `{`).
const V2: u8 = 2;
/// Bytes of a room name's SHA-256 that stand for it in a version 2 cursor.
pub const ROOM_TAG: usize = 4;
/// Longest epoch a version 2 cursor may carry (the buses' are about 25 bytes): each is copied
/// into every room that names it, so a forged long one would be held once per room.
const MAX_EPOCH_BYTES: usize = 128;

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

fn tag(room: &str) -> [u8; ROOM_TAG] {
    let digest = Sha256::digest(room.as_bytes());
    let mut t = [0; ROOM_TAG];
    t.copy_from_slice(&digest[..ROOM_TAG]);
    t
}

impl Cursor {
    /// Read a cursor for a request naming `rooms`: only their positions are kept.
    pub fn decode(text: &str, rooms: &[String]) -> Result<Self, CursorError> {
        let text = text.trim();
        if text.len() > MAX_CURSOR_TEXT {
            return Err(CursorError::TooLong);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(text.as_bytes())
            .map_err(|_| CursorError::NotBase64)?;
        let mut cursor = if bytes.first() == Some(&V2) {
            Self::decode_v2(&bytes[1..], rooms)?
        } else {
            serde_json::from_slice(&bytes).map_err(|e| CursorError::NotPositions(e.to_string()))?
        };
        cursor.retain(rooms);
        Ok(cursor)
    }

    fn decode_v2(mut b: &[u8], rooms: &[String]) -> Result<Self, CursorError> {
        let bad = |what: &str| CursorError::NotPositions(what.to_string());
        let varint = |b: &mut &[u8]| prost::encoding::decode_varint(b).map_err(|_| bad("a number"));
        let epochs_n = varint(&mut b)?;
        // Each epoch takes a byte at least: a count beyond the bytes is a lie, not a reservation.
        if epochs_n > b.len() as u64 {
            return Err(bad("more epochs than bytes"));
        }
        let mut epochs = Vec::with_capacity(epochs_n as usize);
        for _ in 0..epochs_n {
            let len = varint(&mut b)?;
            let len = usize::try_from(len)
                .ok()
                .filter(|l| *l <= b.len() && *l <= MAX_EPOCH_BYTES)
                .ok_or_else(|| bad("an epoch"))?;
            let (e, rest) = b.split_at(len);
            epochs.push(String::from_utf8(e.to_vec()).map_err(|_| bad("an epoch"))?);
            b = rest;
        }
        // A tag two of the request's rooms share names neither (both then join fresh).
        let mut by_tag: BTreeMap<[u8; ROOM_TAG], Option<&String>> = BTreeMap::new();
        for r in rooms {
            by_tag
                .entry(tag(r))
                .and_modify(|named| *named = None)
                .or_insert(Some(r));
        }
        let mut positions = BTreeMap::new();
        while !b.is_empty() {
            if b.len() < ROOM_TAG {
                return Err(bad("a room"));
            }
            let (t, rest) = b.split_at(ROOM_TAG);
            b = rest;
            let epoch = varint(&mut b)?;
            let seq = varint(&mut b)?;
            let epoch = usize::try_from(epoch)
                .ok()
                .and_then(|i| epochs.get(i))
                .ok_or_else(|| bad("an epoch index"))?;
            let mut key = [0; ROOM_TAG];
            key.copy_from_slice(t);
            if let Some(Some(room)) = by_tag.get(&key) {
                positions.insert((*room).clone(), (seq, epoch.clone()));
            }
        }
        Ok(Self { positions })
    }

    /// Keep only the positions of `rooms` (the rooms of the request).
    pub fn retain(&mut self, rooms: &[String]) {
        self.positions.retain(|room, _| rooms.contains(room));
    }

    /// The compact (version 2) form; the JSON form in the rare case two of its rooms share a
    /// tag (about one request of 100,000 with 256 rooms), which version 2 could not tell apart.
    pub fn encode(&self) -> String {
        let mut tags: Vec<[u8; ROOM_TAG]> = self.positions.keys().map(|r| tag(r)).collect();
        tags.sort_unstable();
        if tags.windows(2).any(|w| w[0] == w[1]) {
            return URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default());
        }
        let mut epochs: Vec<&str> = Vec::new();
        for (_, e) in self.positions.values() {
            if !epochs.contains(&e.as_str()) {
                epochs.push(e);
            }
        }
        let mut b = Vec::with_capacity(16 + self.positions.len() * (ROOM_TAG + 6));
        b.push(V2);
        prost::encoding::encode_varint(epochs.len() as u64, &mut b);
        for e in &epochs {
            prost::encoding::encode_varint(e.len() as u64, &mut b);
            b.extend_from_slice(e.as_bytes());
        }
        for (room, (seq, epoch)) in &self.positions {
            b.extend_from_slice(&tag(room));
            let i = epochs.iter().position(|e| e == epoch).unwrap_or(0);
            prost::encoding::encode_varint(i as u64, &mut b);
            prost::encoding::encode_varint(*seq, &mut b);
        }
        URL_SAFE_NO_PAD.encode(b)
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

    fn rooms(names: &[&str]) -> Vec<String> {
        names.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn cursors_round_trip() {
        let mut c = Cursor::default();
        c.set("a", 4, "e1");
        c.set("b", 9, "e1");
        c.set("c", 300, "e2");
        let d =
            Cursor::decode(&c.encode(), &rooms(&["a", "b", "c"])).expect("own encoding decodes");
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
    fn a_cursor_of_256_rooms_with_long_names_fits_a_request_header() {
        // The documented most rooms per request, 120-character names: version 1 took 68 bytes
        // and more a room, so the `Last-Event-ID` it came back in got 431.
        let names: Vec<String> = (0..256)
            .map(|i| format!("room:{i:03}:{}", "x".repeat(111)))
            .collect();
        let mut c = Cursor::default();
        for (i, r) in names.iter().enumerate() {
            c.set(r, 1_000_000 + i as u64, "01JEPOCHEPOCHEPOCHEPOCHEPO");
        }
        let text = c.encode();
        assert!(text.len() < 4 * 1024, "{} bytes", text.len());
        assert_eq!(Cursor::decode(&text, &names), Ok(c));
    }

    #[test]
    fn a_version_1_cursor_is_still_read() {
        let v1 = URL_SAFE_NO_PAD.encode(br#"{"p":{"a":[4,"e1"],"z":[1,"e1"]}}"#);
        let d = Cursor::decode(&v1, &rooms(&["a", "b"])).unwrap();
        assert_eq!(d.get("a").map(|p| p.seq), Some(4));
        assert_eq!(d.positions.len(), 1, "only the rooms of the request");
    }

    #[test]
    fn rooms_whose_tags_collide_are_written_in_full_or_left_out() {
        // Two names with the same 4-byte tag, found by search.
        let mut seen = BTreeMap::new();
        let (a, b) = (0u64..)
            .find_map(|i| {
                let name = format!("r{i}");
                seen.insert(tag(&name), name.clone())
                    .map(|other| (other, name))
            })
            .unwrap();
        let mut c = Cursor::default();
        c.set(&a, 5, "e");
        c.set(&b, 9, "e");
        // Written in the JSON form, which names them: both positions come back exactly.
        assert_eq!(Cursor::decode(&c.encode(), &rooms(&[&a, &b])), Ok(c));
        // A cursor for one of them, read for a request naming both: neither is guessed.
        let mut one = Cursor::default();
        one.set(&a, 5, "e");
        let d = Cursor::decode(&one.encode(), &rooms(&[&a, &b])).unwrap();
        assert!(d.positions.is_empty(), "{d:?}");
    }

    #[test]
    fn a_version_2_cursor_lying_about_its_counts_is_refused() {
        // 2^40 epochs declared in a few bytes; an epoch longer than what follows; an epoch
        // index out of range.
        for bytes in [
            vec![V2, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20],
            vec![V2, 1, 200, b'e'],
            vec![V2, 1, 1, b'e', 1, 2, 3, 4, 5, 1],
            // An epoch longer than any bus writes (it would be copied into every room).
            [vec![V2, 1, 129, 1], vec![b'e'; 129]].concat(),
        ] {
            assert!(
                matches!(
                    Cursor::decode(&URL_SAFE_NO_PAD.encode(&bytes), &rooms(&["a"])),
                    Err(CursorError::NotPositions(_))
                ),
                "{bytes:?}"
            );
        }
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
                !matches!(Cursor::decode(bad, &rooms(&["a"])), Ok(c) if !c.positions.is_empty()),
                "{bad}"
            );
        }
        assert_eq!(Cursor::decode("!!!", &[]), Err(CursorError::NotBase64));
        assert_eq!(
            Cursor::decode(&"A".repeat(MAX_CURSOR_TEXT + 4), &[]),
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
