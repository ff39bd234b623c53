//! permessage-deflate terminated at the tunnel's client side (socket-free, over pipes): what
//! the app and the client see, and the closes for bombs, bad data and misplaced RSV1.

use super::*;
use crate::engine::deflate;
use crate::engine::frame::DataHeader;

/// A deflate agreement for a route with compression on and `threshold` bytes.
fn agreed(threshold: u64) -> Deflate {
    let cfg = switchboard_config::Compression {
        enabled: true,
        threshold_bytes: threshold,
        ..Default::default()
    };
    deflate::negotiate(["permessage-deflate"], &cfg).expect("negotiated")
}

fn with_deflate(threshold: u64) -> TunnelLimits {
    TunnelLimits {
        deflate: Some(agreed(threshold)),
        ..limits()
    }
}

/// Start a tunnel whose client end understands RSV1.
fn start_deflate(l: TunnelLimits) -> Harness {
    let mut h = start(l);
    h.client.scanner.allow_compressed();
    h
}

/// The next data frame: its header and its payload, unmasked. Anything else fails the test.
async fn next_frame(r: &mut DirectionReader) -> (DataHeader, Vec<u8>) {
    let mut header: Option<DataHeader> = None;
    let mut data = Vec::new();
    loop {
        let mut pos = 0;
        let buf = std::mem::take(&mut r.buf);
        while let Some(ev) = r.scanner.next(&buf, &mut pos).expect("valid frames") {
            let whole = match ev {
                Event::Header(h) => {
                    let empty = h.payload_len == 0;
                    header = Some(h);
                    empty
                }
                Event::Payload(p) => {
                    data.extend_from_slice(p);
                    r.scanner.at_boundary()
                }
                Event::Control(c) => panic!("expected data, got {:?}", c.opcode),
            };
            if whole && let Some(h) = header.take() {
                r.buf = buf[pos..].to_vec();
                if h.raw[1] & 0x80 != 0 {
                    let m = &h.raw[h.raw.len() - 4..];
                    for (i, b) in data.iter_mut().enumerate() {
                        *b ^= m[i % 4];
                    }
                }
                return (h, data);
            }
        }
        let mut chunk = vec![0u8; 4096];
        let n = r.io.read(&mut chunk).await.expect("read");
        assert!(n > 0, "stream ended before a whole data frame");
        r.buf.extend_from_slice(&chunk[..n]);
    }
}

fn chat(n: usize) -> Vec<u8> {
    let mut s = String::new();
    while s.len() < n {
        s.push_str("{\"type\":\"message\",\"room\":\"lobby\",\"text\":\"hello again\"},");
    }
    s.truncate(n);
    s.into_bytes()
}

#[tokio::test]
async fn a_compressed_client_message_in_fragments_reaches_the_app_inflated_in_one_masked_frame() {
    let mut h = start_deflate(with_deflate(64));
    let plain = chat(900);
    let z = deflate::compress(&plain, 6, 15).expect("compressed");
    let (a, b) = z.split_at(z.len() / 2);
    let mut wire = frame::encode_frame(OpCode::Text, false, true, a, MASK);
    // A ping between the fragments goes through at once (control frames interleave).
    wire.extend_from_slice(&frame::encode(OpCode::Ping, b"p", MASK));
    wire.extend_from_slice(&frame::encode_frame(
        OpCode::Continuation,
        true,
        false,
        b,
        Some([9, 9, 9, 9]),
    ));
    // Split the bytes across writes so the collection spans reads.
    for part in wire.chunks(7) {
        h.client.send(part).await;
    }
    assert_eq!(h.upstream.next().await, Got::Ping);
    let (hdr, data) = next_frame(&mut h.upstream).await;
    assert_eq!(hdr.opcode, OpCode::Text);
    assert!(hdr.fin && !hdr.compressed, "one plain frame for the app");
    assert_ne!(hdr.raw[1] & 0x80, 0, "masked toward the app");
    assert_eq!(data, plain);
}

#[tokio::test]
async fn uncompressed_client_messages_still_stream_with_the_client_mask() {
    let mut h = start_deflate(with_deflate(64));
    h.client
        .send(&frame::encode(OpCode::Text, b"hello", MASK))
        .await;
    assert_eq!(h.upstream.next().await, Got::Data(masked(b"hello")));
}

#[tokio::test]
async fn an_app_message_over_the_threshold_reaches_the_client_compressed_and_a_small_one_as_sent() {
    let mut h = start_deflate(with_deflate(64));
    let big = chat(800);
    h.upstream
        .send(&frame::encode(OpCode::Text, &big, None))
        .await;
    let (hdr, z) = next_frame(&mut h.client).await;
    assert!(hdr.compressed && hdr.fin, "RSV1 on the one frame");
    assert!(z.len() < big.len() / 2, "{} bytes on the wire", z.len());
    assert_eq!(deflate::inflate(&z, 1 << 20).expect("inflates"), big);

    h.upstream
        .send(&frame::encode(OpCode::Binary, b"tiny", None))
        .await;
    let (hdr, data) = next_frame(&mut h.client).await;
    assert!(!hdr.compressed);
    assert_eq!(data, b"tiny");
}

#[tokio::test]
async fn a_fragmented_app_message_is_forwarded_uncompressed_as_it_comes() {
    let mut h = start_deflate(with_deflate(8));
    let body = chat(300);
    let mut wire = frame::encode_frame(OpCode::Text, false, false, &body[..100], None);
    wire.extend_from_slice(&frame::encode_frame(
        OpCode::Continuation,
        true,
        false,
        &body[100..],
        None,
    ));
    h.upstream.send(&wire).await;
    let (first, data) = next_frame(&mut h.client).await;
    assert!(!first.compressed && !first.fin);
    assert_eq!(data, &body[..100]);
}

#[tokio::test]
async fn a_compressed_message_inflating_past_the_cap_closes_1009_and_the_app_gets_none_of_it() {
    let mut h = start_deflate(with_deflate(64));
    // limits() caps messages at 1000 bytes; this inflates to 100 KB from a few hundred.
    let bomb = deflate::compress(&vec![b'a'; 100_000], 9, 15).expect("compressed");
    assert!(bomb.len() < 1000);
    h.client
        .send(&frame::encode_frame(
            OpCode::Binary,
            true,
            true,
            &bomb,
            MASK,
        ))
        .await;
    assert_eq!(h.upstream.next().await, Got::Close(Some(1009)));
    assert_eq!(h.client.next().await, Got::Close(Some(1009)));
}

#[tokio::test]
async fn an_uncompressed_client_message_over_the_cap_still_closes_1009() {
    // With deflate the scanner lets compressed bytes run a little over the cap; plain
    // messages are held to it exactly.
    let mut h = start_deflate(with_deflate(64));
    h.client
        .send(&frame::encode(OpCode::Binary, &[0u8; 1001], MASK))
        .await;
    assert_eq!(h.upstream.next().await, Got::Close(Some(1009)));
}

#[tokio::test]
async fn compressed_text_that_is_not_utf8_once_inflated_closes_1007() {
    let mut h = start_deflate(with_deflate(64));
    let z = deflate::compress(&[0xff, 0xfe, 0xfd, b'a'], 6, 15).expect("compressed");
    h.client
        .send(&frame::encode_frame(OpCode::Text, true, true, &z, MASK))
        .await;
    assert_eq!(h.upstream.next().await, Got::Close(Some(1007)));
    assert_eq!(h.client.next().await, Got::Close(Some(1007)));
}

#[tokio::test]
async fn garbage_in_a_compressed_message_closes_1007() {
    let mut h = start_deflate(with_deflate(64));
    h.client
        .send(&frame::encode_frame(
            OpCode::Binary,
            true,
            true,
            &[0xff; 16],
            MASK,
        ))
        .await;
    assert_eq!(h.upstream.next().await, Got::Close(Some(1007)));
}

#[tokio::test]
async fn rsv1_on_a_continuation_or_a_control_frame_closes_1002() {
    for bad in [
        {
            let mut w = frame::encode_frame(OpCode::Text, false, false, b"a", MASK);
            w.extend_from_slice(&frame::encode_frame(
                OpCode::Continuation,
                true,
                true,
                b"b",
                MASK,
            ));
            w
        },
        frame::encode_frame(OpCode::Ping, true, true, b"", MASK),
    ] {
        let mut h = start_deflate(with_deflate(64));
        h.client.send(&bad).await;
        let mut got = h.upstream.next().await;
        if got == Got::Data(masked(b"a")) {
            got = h.upstream.next().await;
        }
        assert_eq!(got, Got::Close(Some(1002)));
    }
}

#[tokio::test]
async fn rsv1_without_negotiation_closes_1002() {
    let mut h = start(limits());
    let z = deflate::compress(b"hello hello hello", 6, 15).expect("compressed");
    h.client
        .send(&frame::encode_frame(OpCode::Text, true, true, &z, MASK))
        .await;
    assert_eq!(h.upstream.next().await, Got::Close(Some(1002)));
}
