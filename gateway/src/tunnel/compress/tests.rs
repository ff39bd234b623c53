use super::*;
use crate::engine::frame::{Event, Scanner};

fn agreed(threshold: u64) -> Deflate {
    let cfg = switchboard_config::Compression {
        enabled: true,
        threshold_bytes: threshold,
        ..Default::default()
    };
    deflate::negotiate(["permessage-deflate"], &cfg).expect("negotiated")
}

/// Feed `wire` through a scanner into `z` the way the relay does, in pieces of `split` bytes;
/// returns what `frame_end` produced and the frames routed `Forward`.
fn drive(
    z: &mut Compression,
    sender: Sender,
    wire: &[u8],
    split: usize,
) -> (Vec<Result<Vec<u8>, CloseCause>>, usize) {
    let mut scanner = Scanner::new(sender, u64::MAX);
    if sender == Sender::Client {
        scanner.allow_compressed();
    }
    let (mut done, mut forwarded) = (Vec::new(), 0);
    for piece in wire.chunks(split) {
        let mut pos = 0;
        while let Some(ev) = scanner.next(piece, &mut pos).expect("valid") {
            match ev {
                Event::Header(h) => match z.header(&h) {
                    Route::Collect if h.payload_len == 0 => done.extend(z.frame_end()),
                    Route::Collect => {}
                    Route::Forward => forwarded += 1,
                    Route::TooBig => panic!("too big"),
                },
                Event::Payload(p) => {
                    if z.collecting() {
                        z.payload(p);
                        if scanner.at_boundary() {
                            done.extend(z.frame_end());
                        }
                    }
                }
                Event::Control(_) => {}
            }
        }
    }
    (done, forwarded)
}

/// The payload of one whole frame, unmasked.
fn payload_of(frame_bytes: &[u8], sender: Sender) -> (DataHeader, Vec<u8>) {
    let mut scanner = Scanner::new(sender, u64::MAX);
    scanner.allow_compressed();
    let mut pos = 0;
    let mut header = None;
    let mut data = Vec::new();
    while let Some(ev) = scanner.next(frame_bytes, &mut pos).expect("valid") {
        match ev {
            Event::Header(h) => header = Some(h),
            Event::Payload(p) => data.extend_from_slice(p),
            Event::Control(_) => {}
        }
    }
    let h = header.expect("a data frame");
    if let Some(m) = mask_of(&h) {
        for (i, b) in data.iter_mut().enumerate() {
            *b ^= m[i % 4];
        }
    }
    (h, data)
}

#[test]
fn client_fragments_with_their_own_masks_split_anywhere_inflate_to_the_message() {
    let plain: Vec<u8> = (0..70_000u32).map(|i| (i % 97) as u8).collect();
    let z = deflate::compress(&plain, 6, 15).expect("compressed");
    let third = z.len() / 3;
    let mut wire =
        frame::encode_frame(OpCode::Binary, false, true, &z[..third], Some([1, 2, 3, 4]));
    // 16-bit and 7-bit length headers, different masks, an empty middle fragment.
    wire.extend(frame::encode_frame(
        OpCode::Continuation,
        false,
        false,
        &[],
        Some([5, 6, 7, 8]),
    ));
    wire.extend(frame::encode_frame(
        OpCode::Continuation,
        true,
        false,
        &z[third..],
        Some([0xa, 0xb, 0xc, 0xd]),
    ));
    for split in [1, 3, 4096, wire.len()] {
        let mut c = Compression::new(agreed(0), Sender::Client, 1 << 20);
        let (done, forwarded) = drive(&mut c, Sender::Client, &wire, split);
        assert_eq!(forwarded, 0);
        assert_eq!(done.len(), 1, "one message at split {split}");
        let out = done.into_iter().next().expect("one").expect("inflated");
        let (h, data) = payload_of(&out, Sender::Client);
        assert!(h.fin && !h.compressed && h.opcode == OpCode::Binary);
        assert_eq!(data, plain, "split {split}");
        assert!(!c.collecting(), "nothing held once the message is out");
    }
}

#[test]
fn only_whole_app_messages_at_or_over_the_threshold_are_collected() {
    let mut z = Compression::new(agreed(100), Sender::Server, 1 << 20);
    let big = vec![b'x'; 100];
    let (done, forwarded) = drive(
        &mut z,
        Sender::Server,
        &frame::encode(OpCode::Text, &big, None),
        5,
    );
    assert_eq!(forwarded, 0);
    let (h, data) = payload_of(done[0].as_ref().expect("compressed"), Sender::Server);
    assert!(h.compressed);
    assert_eq!(deflate::inflate(&data, 1000).expect("inflates"), big);

    let small = frame::encode(OpCode::Text, &[b'x'; 99], None);
    let mut frag = frame::encode_frame(OpCode::Text, false, false, &big, None);
    frag.extend(frame::encode_frame(
        OpCode::Continuation,
        true,
        false,
        &big,
        None,
    ));
    for wire in [small, frag] {
        let (done, forwarded) = drive(&mut z, Sender::Server, &wire, 7);
        assert!(done.is_empty());
        assert!(forwarded >= 1);
        assert!(!z.collecting());
    }
}

#[test]
fn a_plain_client_message_is_capped_across_its_fragments() {
    let mut z = Compression::new(agreed(0), Sender::Client, 10);
    let mut scanner = Scanner::new(Sender::Client, u64::MAX);
    scanner.allow_compressed();
    let mut wire = frame::encode_frame(OpCode::Text, false, false, b"123456", Some([1, 1, 1, 1]));
    wire.extend(frame::encode_frame(
        OpCode::Continuation,
        true,
        false,
        b"12345",
        Some([1, 1, 1, 1]),
    ));
    let mut pos = 0;
    let mut routes = Vec::new();
    while let Some(ev) = scanner.next(&wire, &mut pos).expect("valid") {
        if let Event::Header(h) = ev {
            routes.push(z.header(&h));
        }
    }
    assert_eq!(routes, [Route::Forward, Route::TooBig]);
}

#[test]
fn the_wire_cap_is_widened_for_client_messages_only() {
    assert!(Compression::wire_cap(Sender::Client, 1000) > 1000);
    assert_eq!(Compression::wire_cap(Sender::Server, 1000), 1000);
}
