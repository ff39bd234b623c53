//! The connection core over an in-memory duplex pipe: no sockets, no timers.

use std::sync::Arc;

use switchboard_config::Compression;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

use super::*;
use crate::engine::bucket::TokenBucket;
use crate::engine::deflate::negotiate;

const M: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);

fn deflate_on(threshold: u64) -> Option<Deflate> {
    negotiate(
        ["permessage-deflate"],
        &Compression {
            enabled: true,
            threshold_bytes: threshold,
            ..Compression::default()
        },
    )
}

fn pair(max: u64, deflate: Option<Deflate>) -> (Conn<DuplexStream>, DuplexStream) {
    let (server, client) = duplex(1 << 20);
    (Conn::new(server, max, deflate), client)
}

/// What the client reads back: (opcode, rsv1, payload) per frame.
async fn read_frames(client: &mut DuplexStream, want: usize) -> Vec<(OpCode, bool, Vec<u8>)> {
    let mut s = Scanner::new(Sender::Server, u64::MAX);
    s.allow_compressed();
    let mut out: Vec<(OpCode, bool, Vec<u8>)> = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut pending: Option<(OpCode, bool, u64, Vec<u8>)> = None;
    while out.len() < want {
        let n = client.read(&mut buf).await.unwrap();
        assert!(n > 0, "server closed the pipe after {} frames", out.len());
        let mut pos = 0;
        while let Some(ev) = s.next(&buf[..n], &mut pos).unwrap() {
            match ev {
                Event::Header(h) => {
                    if h.payload_len == 0 {
                        out.push((h.opcode, h.compressed, Vec::new()));
                    } else {
                        pending = Some((h.opcode, h.compressed, h.payload_len, Vec::new()));
                    }
                }
                Event::Payload(p) => {
                    let (op, c, len, mut data) = pending.take().unwrap();
                    data.extend_from_slice(p);
                    if data.len() as u64 == len {
                        out.push((op, c, data));
                    } else {
                        pending = Some((op, c, len, data));
                    }
                }
                Event::Control(c) => out.push((c.opcode, false, c.payload)),
            }
        }
    }
    out
}

#[tokio::test]
async fn a_masked_text_message_is_yielded_whole() {
    let (mut conn, mut client) = pair(1024, None);
    client
        .write_all(&frame::encode(OpCode::Text, b"hello", M))
        .await
        .unwrap();
    assert_eq!(
        conn.next().await.unwrap().unwrap(),
        Message::Text("hello".into())
    );
}

#[tokio::test]
async fn a_fragmented_message_with_a_ping_between_is_yielded_whole_and_the_ping_answered() {
    let (mut conn, mut client) = pair(1024, None);
    let mut bytes = frame::encode_frame(OpCode::Text, false, false, "h\u{e9}".as_bytes(), M);
    bytes.extend(frame::encode(OpCode::Ping, b"p", M));
    // The 2-byte é is split across the two fragments.
    let mut b = frame::encode_frame(OpCode::Continuation, false, false, &[], M);
    b.extend(frame::encode_frame(
        OpCode::Continuation,
        true,
        false,
        b"llo",
        M,
    ));
    bytes.extend(b);
    // One byte at a time: every split point.
    for byte in bytes {
        client.write_all(&[byte]).await.unwrap();
    }
    assert_eq!(
        conn.next().await.unwrap().unwrap(),
        Message::Text("h\u{e9}llo".into())
    );
    assert_eq!(
        read_frames(&mut client, 1).await,
        [(OpCode::Pong, false, b"p".to_vec())]
    );
}

#[tokio::test]
async fn a_binary_message_keeps_its_bytes() {
    let (mut conn, mut client) = pair(1 << 20, None);
    let data: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
    client
        .write_all(&frame::encode(OpCode::Binary, &data, M))
        .await
        .unwrap();
    assert_eq!(
        conn.next().await.unwrap().unwrap(),
        Message::Binary(Bytes::from(data))
    );
}

#[tokio::test]
async fn text_that_is_not_utf8_closes_1007() {
    let (mut conn, mut client) = pair(1024, None);
    client
        .write_all(&frame::encode(OpCode::Text, &[0xff, 0xfe], M))
        .await
        .unwrap();
    let err = conn.next().await.unwrap().unwrap_err();
    assert_eq!(err.cause().code(), 1007);
    assert!(conn.next().await.is_none(), "reading ends after an error");
}

#[tokio::test]
async fn a_message_over_the_limit_closes_1009_at_its_header() {
    let (mut conn, mut client) = pair(10, None);
    let mut f = frame::encode_frame(OpCode::Binary, false, false, &[1; 6], M);
    f.extend(frame::encode_frame(
        OpCode::Continuation,
        true,
        false,
        &[1; 6],
        M,
    ));
    client.write_all(&f).await.unwrap();
    assert_eq!(conn.next().await.unwrap().unwrap_err().cause().code(), 1009);
}

/// Pings and the fragments of a message cost of the rate limit (a ping one token, a fragment
/// after a message's first frame a sixteenth), as in the proxy tunnel: a connection sending
/// nothing but empty fragments or pings kept a gateway core busy and was never closed.
#[tokio::test]
async fn a_flood_of_pings_or_empty_fragments_closes_1008_and_a_paced_client_does_not() {
    let t0 = std::time::Instant::now();
    for flood in ["pings", "fragments"] {
        let (conn, mut client) = pair(1024, None);
        let mut conn = conn.limit_rate(TokenBucket::new(10, 20, t0));
        let mut bytes = Vec::new();
        if flood == "pings" {
            for _ in 0..25 {
                bytes.extend(frame::encode(OpCode::Ping, b"", M));
            }
        } else {
            bytes.extend(frame::encode_frame(OpCode::Text, false, false, b"a", M));
            for _ in 0..25 * 16 {
                bytes.extend(frame::encode_frame(
                    OpCode::Continuation,
                    false,
                    false,
                    &[],
                    M,
                ));
            }
        }
        client.write_all(&bytes).await.unwrap();
        let err = conn.next().await.unwrap().unwrap_err();
        assert_eq!(err.cause().code(), 1008, "{flood}: {err}");
    }
    // Within the burst: a message in 100 fragments, and a ping after it.
    let (conn, mut client) = pair(1024, None);
    let mut conn = conn.limit_rate(TokenBucket::new(10, 20, t0));
    let mut bytes = frame::encode_frame(OpCode::Text, false, false, b"a", M);
    for _ in 0..99 {
        bytes.extend(frame::encode_frame(
            OpCode::Continuation,
            false,
            false,
            b"",
            M,
        ));
    }
    bytes.extend(frame::encode_frame(
        OpCode::Continuation,
        true,
        false,
        b"b",
        M,
    ));
    bytes.extend(frame::encode(OpCode::Ping, b"p", M));
    client.write_all(&bytes).await.unwrap();
    assert_eq!(
        conn.next().await.unwrap().unwrap(),
        Message::Text("ab".into())
    );
}

/// Messages read in the same socket read as the frame that runs over the rate were within it:
/// they are handed out before the 1008 (a reconnecting client sends its joins and queued
/// publishes at once; dropping the ones within its burst made it resend them all, for ever).
#[tokio::test]
async fn the_messages_within_the_rate_are_handed_out_before_the_1008() {
    let (conn, mut client) = pair(1024, None);
    let mut conn = conn.limit_rate(TokenBucket::new(1, 3, std::time::Instant::now()));
    let mut bytes = Vec::new();
    for i in 0..6 {
        bytes.extend(frame::encode(OpCode::Text, format!("m{i}").as_bytes(), M));
    }
    client.write_all(&bytes).await.unwrap();
    for i in 0..3 {
        assert_eq!(
            conn.next().await.unwrap().unwrap(),
            Message::Text(format!("m{i}"))
        );
    }
    assert_eq!(conn.next().await.unwrap().unwrap_err().cause().code(), 1008);
}

/// The same for every error of the bytes after them: a small publish and an oversized one in
/// one TCP write closed 1009 without the small one ever handled (the client, told its oldest
/// unacknowledged publish was too large, dropped a valid message).
#[tokio::test]
async fn the_messages_read_before_a_bad_frame_are_handed_out_before_its_close() {
    let bad: [(Vec<u8>, u16); 3] = [
        (frame::encode(OpCode::Text, &[b'x'; 64], M), 1009),
        (frame::encode(OpCode::Text, &[0xff, 0xfe], M), 1007),
        (frame::encode(OpCode::Text, b"x", None), 1002),
    ];
    for (frame, code) in bad {
        let (mut conn, mut client) = pair(32, None);
        let mut bytes = frame::encode(OpCode::Text, b"A", M);
        bytes.extend(frame::encode(OpCode::Text, b"B", M));
        bytes.extend(frame);
        client.write_all(&bytes).await.unwrap();
        for want in ["A", "B"] {
            assert_eq!(
                conn.next().await.unwrap().unwrap(),
                Message::Text(want.into()),
                "before {code}"
            );
        }
        assert_eq!(conn.next().await.unwrap().unwrap_err().cause().code(), code);
        assert!(conn.next().await.is_none(), "reading ends after the error");
    }
}

#[tokio::test]
async fn framing_errors_close_1002() {
    let (mut conn, mut client) = pair(1024, None);
    client
        .write_all(&frame::encode(OpCode::Text, b"x", None))
        .await
        .unwrap();
    assert_eq!(conn.next().await.unwrap().unwrap_err().cause().code(), 1002);
}

#[tokio::test]
async fn the_peers_close_is_echoed_with_its_code_and_yielded() {
    let (mut conn, mut client) = pair(1024, None);
    client
        .write_all(&frame::close_frame(4321, "bye", M))
        .await
        .unwrap();
    assert_eq!(
        conn.next().await.unwrap().unwrap(),
        Message::Close {
            code: Some(4321),
            reason: "bye".into()
        }
    );
    conn.flush().await.unwrap();
    let frames = read_frames(&mut client, 1).await;
    assert_eq!(frames[0].0, OpCode::Close);
    assert_eq!(frames[0].2[..2], 4321u16.to_be_bytes());
    // Nothing is sent after the Close.
    conn.send_message(true, Bytes::from_static(b"late"));
    assert!(conn.write_idle());
}

#[tokio::test]
async fn a_close_with_a_reserved_code_is_a_protocol_error() {
    for code in [999u16, 1004, 1005, 1006, 1015, 2000, 5000] {
        let (mut conn, mut client) = pair(1024, None);
        client
            .write_all(&frame::close_frame(code, "", M))
            .await
            .unwrap();
        let err = conn.next().await.unwrap().unwrap_err();
        assert_eq!(err.cause().code(), 1002, "code {code}");
    }
}

#[tokio::test]
async fn the_end_of_the_stream_without_a_close_is_abnormal() {
    let (mut conn, client) = pair(1024, None);
    drop(client);
    let err = conn.next().await.unwrap().unwrap_err();
    assert!(matches!(err, ConnError::Eof));
    assert_eq!(err.cause().code(), 1006);
    assert!(!err.sends_close());
}

#[tokio::test]
async fn the_rfc_compressed_hello_is_inflated_whole_and_fragmented() {
    let (mut conn, mut client) = pair(1024, deflate_on(1024));
    let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    client
        .write_all(&frame::encode_frame(OpCode::Text, true, true, &hello, M))
        .await
        .unwrap();
    assert_eq!(
        conn.next().await.unwrap().unwrap(),
        Message::Text("Hello".into())
    );
    // §7.2.3.1's fragmented form: RSV1 on the first frame only.
    let mut f = frame::encode_frame(OpCode::Text, false, true, &hello[..3], M);
    f.extend(frame::encode_frame(
        OpCode::Continuation,
        true,
        false,
        &hello[3..],
        M,
    ));
    client.write_all(&f).await.unwrap();
    assert_eq!(
        conn.next().await.unwrap().unwrap(),
        Message::Text("Hello".into())
    );
}

#[tokio::test]
async fn a_compressed_frame_without_negotiated_deflate_is_a_protocol_error() {
    let (mut conn, mut client) = pair(1024, None);
    let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    client
        .write_all(&frame::encode_frame(OpCode::Text, true, true, &hello, M))
        .await
        .unwrap();
    assert_eq!(conn.next().await.unwrap().unwrap_err().cause().code(), 1002);
}

#[tokio::test]
async fn a_decompression_bomb_closes_1009_and_its_small_neighbours_are_fine() {
    let (mut conn, mut client) = pair(64 * 1024, deflate_on(0));
    let bomb = deflate::compress(&vec![0u8; 16 << 20], 9, 15).unwrap();
    assert!(
        bomb.len() < 64 * 1024,
        "the bomb fits the wire cap: {}",
        bomb.len()
    );
    client
        .write_all(&frame::encode_frame(OpCode::Binary, true, true, &bomb, M))
        .await
        .unwrap();
    assert_eq!(conn.next().await.unwrap().unwrap_err().cause().code(), 1009);
}

#[tokio::test]
async fn bad_compressed_data_closes_1007() {
    let (mut conn, mut client) = pair(1024, deflate_on(0));
    client
        .write_all(&frame::encode_frame(
            OpCode::Binary,
            true,
            true,
            &[0xff, 0xff],
            M,
        ))
        .await
        .unwrap();
    assert_eq!(conn.next().await.unwrap().unwrap_err().cause().code(), 1007);
}

#[tokio::test]
async fn outgoing_messages_are_compressed_from_the_threshold_on() {
    let (mut conn, mut client) = pair(1 << 20, deflate_on(100));
    conn.send_message(true, Bytes::from(vec![b'a'; 99]));
    conn.send_message(true, Bytes::from(vec![b'a'; 100]));
    conn.flush().await.unwrap();
    let frames = read_frames(&mut client, 2).await;
    assert_eq!((frames[0].1, frames[0].2.len()), (false, 99));
    assert!(frames[1].1, "RSV1 set on the compressed message");
    assert_eq!(
        deflate::inflate(&frames[1].2, 1000).unwrap(),
        vec![b'a'; 100]
    );
    assert!(frames[1].2.len() < 100, "smaller on the wire");
}

#[tokio::test]
async fn a_shared_message_is_compressed_once_for_every_connection_with_the_same_settings() {
    let msg = Shared::text(Arc::from("x".repeat(4096)));
    let d = deflate_on(1024);
    let a = msg.frame(d.as_ref());
    let b = msg.frame(d.as_ref());
    assert_eq!(
        a.body.as_ptr(),
        b.body.as_ptr(),
        "the same compressed bytes"
    );
    assert!(a.body.len() < 4096);
    // A connection without deflate shares the payload itself, uncompressed.
    let plain = msg.frame(None);
    assert_eq!(plain.body.as_ptr(), msg.payload().as_ptr());
    // Another window is another frame.
    let d9 = negotiate(
        ["permessage-deflate; server_max_window_bits=9"],
        &Compression {
            enabled: true,
            ..Compression::default()
        },
    );
    assert_ne!(msg.frame(d9.as_ref()).body.as_ptr(), a.body.as_ptr());
    assert_eq!(msg.frames.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn shared_frames_reach_the_client_intact() {
    let (mut conn, mut client) = pair(1 << 20, deflate_on(10));
    let msg = Shared::binary(Bytes::from(vec![7u8; 300]));
    conn.send_shared(&msg);
    conn.flush().await.unwrap();
    let f = read_frames(&mut client, 1).await;
    assert_eq!(f[0].0, OpCode::Binary);
    assert_eq!(deflate::inflate(&f[0].2, 1000).unwrap(), vec![7u8; 300]);
}

#[tokio::test]
async fn an_idle_connection_holds_no_buffers() {
    let (mut conn, mut client) = pair(1 << 20, None);
    client
        .write_all(&frame::encode(OpCode::Binary, &[1; 5000], M))
        .await
        .unwrap();
    client
        .write_all(&frame::encode(OpCode::Ping, b"x", M))
        .await
        .unwrap();
    let _ = conn.next().await.unwrap().unwrap();
    conn.send_message(false, Bytes::from(vec![2; 5000]));
    conn.flush().await.unwrap();
    assert!(conn.partial.is_none());
    assert_eq!(conn.ready.capacity(), 0);
    assert_eq!(conn.write.capacity(), 0);
    assert_eq!(conn.pending_write_bytes(), 0);
}

#[tokio::test]
async fn a_partial_message_is_kept_until_its_last_fragment() {
    let (mut conn, mut client) = pair(1 << 20, None);
    client
        .write_all(&frame::encode_frame(
            OpCode::Binary,
            false,
            false,
            b"abc",
            M,
        ))
        .await
        .unwrap();
    let poll = futures_util::FutureExt::now_or_never(conn.next());
    assert!(poll.is_none(), "no message yet");
    assert_eq!(conn.partial.as_ref().map(|p| p.data.len()), Some(3));
    client
        .write_all(&frame::encode_frame(
            OpCode::Continuation,
            true,
            false,
            b"de",
            M,
        ))
        .await
        .unwrap();
    assert_eq!(
        conn.next().await.unwrap().unwrap(),
        Message::Binary(Bytes::from_static(b"abcde"))
    );
}

#[tokio::test]
async fn writes_wait_for_a_slow_reader_and_reading_goes_on_meanwhile() {
    let (server, mut client) = duplex(1024);
    let mut conn = Conn::new(server, 1 << 20, None);
    conn.send_message(false, Bytes::from(vec![0u8; 100_000]));
    client
        .write_all(&frame::encode(OpCode::Text, b"still read", M))
        .await
        .unwrap();
    assert_eq!(
        conn.next().await.unwrap().unwrap(),
        Message::Text("still read".into())
    );
    assert!(conn.pending_write_bytes() > 0, "the peer has not read yet");
    let reader = tokio::spawn(async move {
        let mut total = 0;
        let mut buf = vec![0u8; 8192];
        while total < 100_010 {
            total += client.read(&mut buf).await.unwrap();
        }
        total
    });
    conn.flush().await.unwrap();
    assert_eq!(reader.await.unwrap(), 100_000 + 10);
}

#[tokio::test]
async fn our_close_is_written_after_what_was_queued_before_it() {
    let (mut conn, mut client) = pair(1024, None);
    conn.send_message(true, Bytes::from_static(b"last words"));
    conn.close(4008, "slow consumer");
    conn.ping(b"ignored");
    conn.flush().await.unwrap();
    let f = read_frames(&mut client, 2).await;
    assert_eq!(f[0], (OpCode::Text, false, b"last words".to_vec()));
    assert_eq!(f[1].0, OpCode::Close);
    assert_eq!(&f[1].2[2..], b"slow consumer");
    assert!(conn.write_idle());
}

#[tokio::test]
async fn a_ping_flood_from_a_peer_that_does_not_read_costs_a_bounded_queue() {
    let (server, mut client) = duplex(256);
    let mut conn = Conn::new(server, 1 << 20, None);
    let mut flood = Vec::new();
    // 10,000 pongs would be 60,000 bytes.
    for i in 0..10_000u32 {
        flood.extend(frame::encode(OpCode::Ping, &i.to_be_bytes(), M));
    }
    flood.extend(frame::encode(OpCode::Text, b"end", M));
    let writer = tokio::spawn(async move {
        client.write_all(&flood).await.unwrap();
        client
    });
    assert_eq!(
        conn.next().await.unwrap().unwrap(),
        Message::Text("end".into())
    );
    // The pipe holds 256 bytes the client never reads; what waits besides is the pongs queued
    // below the limit plus one (6 bytes: header and a 4-byte payload) in the slot.
    assert!(
        conn.pending_write_bytes() <= PONG_QUEUE_LIMIT + 6,
        "{}",
        conn.pending_write_bytes()
    );
    drop(writer.await.unwrap());
}

#[tokio::test]
async fn every_ping_of_a_reading_peer_gets_its_own_pong_in_order() {
    // Autobahn 2.10 / 2.11: ten pings in one read, ten pongs with their payloads.
    let (mut conn, mut client) = pair(1024, None);
    let mut pings = Vec::new();
    for i in 0..10u8 {
        pings.extend(frame::encode(OpCode::Ping, &[b'p', i], M));
    }
    pings.extend(frame::encode(OpCode::Text, b"end", M));
    client.write_all(&pings).await.unwrap();
    assert_eq!(
        conn.next().await.unwrap().unwrap(),
        Message::Text("end".into())
    );
    conn.flush().await.unwrap();
    let mut want = Vec::new();
    for i in 0..10u8 {
        want.extend(frame::encode(OpCode::Pong, &[b'p', i], None));
    }
    let mut got = vec![0u8; want.len()];
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        client.read_exact(&mut got),
    )
    .await
    .expect("ten pongs within 5 s")
    .unwrap();
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_ping_after_the_peers_close_is_not_answered() {
    // Autobahn 7.1.3: Close, then Ping in the same read.
    let (mut conn, mut client) = pair(1024, None);
    let mut bytes = frame::close_frame(1000, "", M);
    bytes.extend(frame::encode(OpCode::Ping, b"late", M));
    client.write_all(&bytes).await.unwrap();
    assert!(matches!(
        conn.next().await.unwrap().unwrap(),
        Message::Close { .. }
    ));
    conn.flush().await.unwrap();
    drop(conn);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    // Only the echo of the Close: 2 header bytes and the code.
    assert_eq!(rest, [0x88, 2, 0x03, 0xe8]);
}
