use super::*;

/// What a scan produced, with payload slices joined per frame so splits compare equal.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Header(OpCode, bool, u64, bool, Vec<u8>),
    Payload(Vec<u8>),
    Control(OpCode, Vec<u8>, Vec<u8>),
}

fn scan_split(sender: Sender, max: u64, chunks: &[&[u8]]) -> Result<Vec<Seen>, FrameError> {
    let mut s = Scanner::new(sender, max);
    let mut seen: Vec<Seen> = Vec::new();
    for chunk in chunks {
        let mut pos = 0;
        while let Some(ev) = s.next(chunk, &mut pos)? {
            match ev {
                Event::Header(h) => {
                    if h.too_big {
                        return Err(TOO_BIG);
                    }
                    seen.push(Seen::Header(
                        h.opcode,
                        h.fin,
                        h.payload_len,
                        h.starts_message,
                        h.raw.to_vec(),
                    ))
                }
                Event::Payload(p) => match seen.last_mut() {
                    Some(Seen::Payload(acc)) => acc.extend_from_slice(p),
                    _ => seen.push(Seen::Payload(p.to_vec())),
                },
                Event::Control(c) => seen.push(Seen::Control(c.opcode, c.payload, c.raw)),
            }
        }
        assert_eq!(
            pos,
            chunk.len(),
            "the scanner consumes every byte it is given"
        );
    }
    Ok(seen)
}

fn frame(opcode: OpCode, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = encode(opcode, payload, mask);
    if !fin {
        f[0] &= 0x7F;
    }
    f
}

/// Stands for "the scanner flagged a header as too big" in these tests.
const TOO_BIG: FrameError = FrameError::LengthOverflow;

const M: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);

/// A fragmented masked text message with a ping between fragments, then a binary message
/// with a 16-bit length, then a close.
fn conversation() -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend(frame(OpCode::Text, false, b"Hel", M));
    bytes.extend(frame(OpCode::Ping, true, b"hi", M));
    bytes.extend(frame(OpCode::Continuation, false, b"lo, ", M));
    bytes.extend(frame(OpCode::Continuation, true, b"world", M));
    bytes.extend(frame(OpCode::Binary, true, &[7u8; 300], M));
    bytes.extend(frame(OpCode::Binary, true, b"", M));
    bytes.extend(close_frame(1000, "bye", M));
    bytes
}

#[test]
fn fragmented_masked_message_is_scanned_the_same_at_every_split_point() {
    let bytes = conversation();
    let whole = scan_split(Sender::Client, 1 << 20, &[&bytes]).unwrap();
    for i in 0..=bytes.len() {
        let (a, b) = bytes.split_at(i);
        assert_eq!(
            scan_split(Sender::Client, 1 << 20, &[a, b]).unwrap(),
            whole,
            "split at {i}"
        );
    }
}

#[test]
fn byte_at_a_time_feeding_gives_the_same_frames() {
    let bytes = conversation();
    let whole = scan_split(Sender::Client, 1 << 20, &[&bytes]).unwrap();
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(
        scan_split(Sender::Client, 1 << 20, &singles).unwrap(),
        whole
    );
}

#[test]
fn forwarded_bytes_reassemble_the_input_exactly() {
    let bytes = conversation();
    let seen = scan_split(Sender::Client, 1 << 20, &[&bytes]).unwrap();
    let mut out = Vec::new();
    for s in seen {
        match s {
            Seen::Header(.., raw) | Seen::Control(.., raw) => out.extend(raw),
            Seen::Payload(p) => out.extend(p),
        }
    }
    assert_eq!(out, bytes);
}

#[test]
fn control_payload_is_unmasked_and_close_code_read() {
    let bytes = close_frame(4001, "token expired", M);
    let mut s = Scanner::new(Sender::Client, 10);
    let mut pos = 0;
    match s.next(&bytes, &mut pos).unwrap() {
        Some(Event::Control(c)) => {
            assert_eq!(c.opcode, OpCode::Close);
            assert_eq!(c.close_code(), Some(4001));
            assert_eq!(&c.payload[2..], b"token expired");
            assert_eq!(c.raw, bytes);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn message_over_the_limit_is_flagged_at_the_header_of_the_frame_that_crosses_it() {
    let mut bytes = frame(OpCode::Text, false, &[b'a'; 60], M);
    bytes.extend(frame(OpCode::Continuation, true, &[b'a'; 60], M));
    bytes.extend(close_frame(1000, "", M));
    let mut s = Scanner::new(Sender::Client, 100);
    let mut pos = 0;
    assert!(matches!(s.next(&bytes, &mut pos), Ok(Some(Event::Header(h))) if !h.too_big));
    assert!(matches!(
        s.next(&bytes, &mut pos),
        Ok(Some(Event::Payload(_)))
    ));
    let before = pos;
    assert!(matches!(s.next(&bytes, &mut pos), Ok(Some(Event::Header(h))) if h.too_big));
    assert_eq!(
        pos - before,
        6,
        "only the offending header was read, none of its payload"
    );
    assert!(matches!(
        s.next(&bytes, &mut pos),
        Ok(Some(Event::Payload(_)))
    ));
    assert!(
        matches!(s.next(&bytes, &mut pos), Ok(Some(Event::Control(c))) if c.close_code() == Some(1000)),
        "scanning goes on past the refused frame to the peer's close"
    );
}

#[test]
fn message_exactly_at_the_limit_passes() {
    let bytes = frame(OpCode::Binary, true, &[1; 100], M);
    assert!(scan_split(Sender::Client, 100, &[&bytes]).is_ok());
}

#[test]
fn size_limit_counts_the_whole_message_and_resets_after_it() {
    let mut bytes = Vec::new();
    for _ in 0..5 {
        bytes.extend(frame(OpCode::Text, true, &[b'a'; 80], M));
    }
    assert!(scan_split(Sender::Client, 100, &[&bytes]).is_ok());
}

#[test]
fn unmasked_client_frame_is_a_protocol_error() {
    let bytes = frame(OpCode::Text, true, b"x", None);
    assert_eq!(
        scan_split(Sender::Client, 10, &[&bytes]),
        Err(FrameError::UnmaskedClientFrame)
    );
}

#[test]
fn masked_server_frame_is_a_protocol_error() {
    let bytes = frame(OpCode::Text, true, b"x", M);
    assert_eq!(
        scan_split(Sender::Server, 10, &[&bytes]),
        Err(FrameError::MaskedServerFrame)
    );
}

#[test]
fn framing_violations_are_reported_not_panicked_on() {
    let cases: Vec<(Vec<u8>, FrameError)> = vec![
        (vec![0x83, 0x80, 0, 0, 0, 0], FrameError::ReservedOpcode),
        (vec![0xC1, 0x80, 0, 0, 0, 0], FrameError::ReservedBits),
        (
            frame(OpCode::Ping, false, b"", M),
            FrameError::FragmentedControl,
        ),
        (
            {
                let mut f = vec![0x89, 0x80 | 126, 0, 126];
                f.extend([0u8; 4]);
                f
            },
            FrameError::ControlTooLong,
        ),
        (
            frame(OpCode::Continuation, true, b"x", M),
            FrameError::UnexpectedContinuation,
        ),
        (
            {
                let mut f = frame(OpCode::Text, false, b"x", M);
                f.extend(frame(OpCode::Text, true, b"y", M));
                f
            },
            FrameError::ExpectedContinuation,
        ),
        (vec![0x88, 0x81, 0, 0, 0, 0, 3], FrameError::CloseLengthOne),
        // RFC 6455 §7.4: codes no peer may send (1005/1006/1015 are for reports, not the
        // wire; under 1000, 1016-2999 unassigned or reserved, 5000 and up undefined).
        (close_frame(1005, "", M), FrameError::BadCloseCode(1005)),
        (close_frame(999, "", M), FrameError::BadCloseCode(999)),
        (close_frame(2999, "x", M), FrameError::BadCloseCode(2999)),
        (close_frame(5000, "", M), FrameError::BadCloseCode(5000)),
        (
            vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            FrameError::LengthOverflow,
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(
            scan_split(Sender::Client, 1 << 20, &[&bytes]),
            Err(want),
            "{bytes:?}"
        );
    }
}

#[test]
fn boundary_is_false_only_inside_a_data_payload() {
    let bytes = frame(OpCode::Binary, true, &[9; 10], None);
    let mut s = Scanner::new(Sender::Server, 100);
    assert!(s.at_boundary());
    let mut pos = 0;
    let part = &bytes[..5];
    assert!(matches!(s.next(part, &mut pos), Ok(Some(Event::Header(_)))));
    assert!(!s.at_boundary());
    assert!(matches!(
        s.next(part, &mut pos),
        Ok(Some(Event::Payload(_)))
    ));
    assert!(!s.at_boundary());
    let mut pos = 0;
    assert!(matches!(
        s.next(&bytes[5..], &mut pos),
        Ok(Some(Event::Payload(_)))
    ));
    assert!(s.at_boundary());
}

#[test]
fn sixty_four_bit_lengths_are_read() {
    let payload = vec![5u8; 70_000];
    let bytes = frame(OpCode::Binary, true, &payload, None);
    assert_eq!(bytes[1] & 0x7F, 127);
    let seen = scan_split(Sender::Server, 1 << 20, &[&bytes]).unwrap();
    assert!(matches!(
        &seen[0],
        Seen::Header(OpCode::Binary, true, 70_000, true, _)
    ));
}

#[test]
fn close_reason_is_truncated_on_a_char_boundary() {
    let long = "é".repeat(100);
    let f = close_frame(1001, &long, None);
    let reason = &f[4..];
    assert!(reason.len() <= 123);
    assert!(std::str::from_utf8(reason).is_ok());
}

fn scan_one(s: &mut Scanner, bytes: &[u8]) -> Result<Vec<DataHeader>, FrameError> {
    let mut pos = 0;
    let mut headers = Vec::new();
    while let Some(ev) = s.next(bytes, &mut pos)? {
        if let Event::Header(h) = ev {
            headers.push(h);
        }
    }
    Ok(headers)
}

#[test]
fn rsv1_is_a_protocol_error_unless_deflate_was_negotiated() {
    let f = encode_frame(OpCode::Text, true, true, b"x", M);
    let mut s = Scanner::new(Sender::Client, 1 << 20);
    assert_eq!(scan_one(&mut s, &f), Err(FrameError::ReservedBits));
}

#[test]
fn rsv1_on_the_first_frame_marks_the_message_compressed_once_deflate_was_negotiated() {
    let mut bytes = encode_frame(OpCode::Binary, false, true, b"ab", M);
    bytes.extend(encode_frame(OpCode::Continuation, true, false, b"cd", M));
    bytes.extend(encode_frame(OpCode::Text, true, false, b"plain", M));
    let mut s = Scanner::new(Sender::Client, 1 << 20);
    s.allow_compressed();
    let headers = scan_one(&mut s, &bytes).expect("valid frames");
    let flags: Vec<bool> = headers.iter().map(|h| h.compressed).collect();
    assert_eq!(flags, [true, false, false]);
}

#[test]
fn rsv1_on_a_continuation_frame_is_a_protocol_error_even_with_deflate() {
    let mut bytes = encode_frame(OpCode::Text, false, true, b"ab", M);
    bytes.extend(encode_frame(OpCode::Continuation, true, true, b"cd", M));
    let mut s = Scanner::new(Sender::Client, 1 << 20);
    s.allow_compressed();
    assert_eq!(scan_one(&mut s, &bytes), Err(FrameError::ReservedBits));
}

#[test]
fn rsv1_on_a_control_frame_is_a_protocol_error_even_with_deflate() {
    for op in [OpCode::Ping, OpCode::Pong, OpCode::Close] {
        let f = encode_frame(op, true, true, b"", M);
        let mut s = Scanner::new(Sender::Client, 1 << 20);
        s.allow_compressed();
        assert_eq!(
            scan_one(&mut s, &f),
            Err(FrameError::ReservedBits),
            "{op:?}"
        );
    }
}

#[test]
fn rsv2_and_rsv3_stay_protocol_errors_with_deflate() {
    for bit in [0x20u8, 0x10] {
        let mut f = encode(OpCode::Text, b"x", M);
        f[0] |= bit;
        let mut s = Scanner::new(Sender::Client, 1 << 20);
        s.allow_compressed();
        assert_eq!(scan_one(&mut s, &f), Err(FrameError::ReservedBits));
    }
}

#[test]
fn encoded_frames_carry_fin_rsv1_and_mask_as_asked() {
    let f = encode_frame(OpCode::Binary, false, true, b"abc", None);
    assert_eq!(f, [0x42, 3, b'a', b'b', b'c']);
    let f = encode_frame(OpCode::Text, true, false, b"abc", Some([1, 2, 3, 4]));
    assert_eq!(f, [0x81, 0x83, 1, 2, 3, 4, b'a' ^ 1, b'b' ^ 2, b'c' ^ 3]);
}
