use super::*;

fn cfg() -> Compression {
    Compression {
        enabled: true,
        ..Compression::default()
    }
}

fn offer(h: &str) -> Option<Deflate> {
    negotiate([h], &cfg())
}

/// RFC 7692 §7.2.3.1: "Hello" compressed without context.
const HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

#[test]
fn the_rfc_hello_example_inflates_to_hello() {
    assert_eq!(inflate(&HELLO, 1024).unwrap(), b"Hello");
}

#[test]
fn the_rfc_hello_example_inflates_from_every_split_of_its_frames_payload() {
    // The connection core joins the payload of all frames of a message before inflating: any
    // split into fragments yields the same bytes.
    for at in 0..=HELLO.len() {
        let mut joined = HELLO[..at].to_vec();
        joined.extend_from_slice(&HELLO[at..]);
        assert_eq!(inflate(&joined, 1024).unwrap(), b"Hello", "split at {at}");
    }
}

#[test]
fn hello_compresses_to_the_rfc_bytes() {
    assert_eq!(compress(b"Hello", 6, 15).unwrap(), HELLO);
}

#[test]
fn the_rfc_stored_block_example_inflates() {
    // §7.2.3.3: a DEFLATE block with no compression.
    let stored = [
        0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
    ];
    assert_eq!(inflate(&stored, 1024).unwrap(), b"Hello");
}

#[test]
fn the_rfc_bfinal_example_inflates_and_ignores_the_appended_tail() {
    // §7.2.3.4: BFINAL set on the last block.
    let last = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
    assert_eq!(inflate(&last, 1024).unwrap(), b"Hello");
}

#[test]
fn the_rfc_two_block_example_inflates() {
    // §7.2.3.5: two DEFLATE blocks in one message.
    let two = [
        0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
    ];
    assert_eq!(inflate(&two, 1024).unwrap(), b"Hello");
}

#[test]
fn an_empty_message_round_trips() {
    let c = compress(b"", 6, 15).unwrap();
    assert_eq!(inflate(&c, 0).unwrap(), b"");
}

#[test]
fn messages_round_trip_at_every_level_and_window() {
    let text: Vec<u8> = (0..200_000u32)
        .map(|i| {
            b"the quick brown fox jumps over the lazy dog "[(i % 44) as usize] ^ (i / 9973) as u8
        })
        .collect();
    for level in [1, 6, 9] {
        for bits in 9..=15 {
            let c = compress(&text, level, bits).unwrap();
            assert!(
                c.len() < text.len() / 4,
                "level {level} bits {bits}: {}",
                c.len()
            );
            assert_eq!(inflate(&c, text.len() as u64).unwrap(), text);
        }
    }
}

#[test]
fn incompressible_data_round_trips() {
    let mut x: u32 = 12345;
    let noise: Vec<u8> = (0..100_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let c = compress(&noise, 6, 15).unwrap();
    assert_eq!(inflate(&c, noise.len() as u64).unwrap(), noise);
}

#[test]
fn a_context_is_not_carried_from_one_message_to_the_next() {
    // With context takeover the second copy would be a back-reference into the first.
    let a = compress(b"Hello", 6, 15).unwrap();
    let b = compress(b"Hello", 6, 15).unwrap();
    assert_eq!(a, b);
    assert_eq!(inflate(&b, 5).unwrap(), b"Hello");
}

#[test]
fn a_message_exactly_at_the_cap_inflates() {
    let data = vec![b'a'; 100_000];
    let c = compress(&data, 6, 15).unwrap();
    assert_eq!(inflate(&c, 100_000).unwrap().len(), 100_000);
}

#[test]
fn a_message_one_byte_over_the_cap_is_too_big() {
    let data = vec![b'a'; 100_001];
    let c = compress(&data, 6, 15).unwrap();
    assert_eq!(inflate(&c, 100_000), Err(InflateError::TooBig));
}

#[test]
fn a_decompression_bomb_is_refused_before_it_is_inflated() {
    // 64 MiB of zeros is about 64 KiB compressed; the cap is 1 MiB.
    let bomb = compress(&vec![0u8; 64 << 20], 9, 15).unwrap();
    assert!(bomb.len() < 128 * 1024, "{}", bomb.len());
    assert_eq!(inflate(&bomb, 1 << 20), Err(InflateError::TooBig));
    // The worker's inflater is usable again afterwards.
    assert_eq!(inflate(&HELLO, 1024).unwrap(), b"Hello");
}

#[test]
fn garbage_is_invalid_deflate_data() {
    // 0xff: BTYPE 11 is reserved.
    assert_eq!(
        inflate(&[0xff, 0xff, 0xff], 1024),
        Err(InflateError::Invalid)
    );
    assert_eq!(inflate(&HELLO, 1024).unwrap(), b"Hello");
}

#[test]
fn a_plain_offer_is_answered_with_no_context_takeover_both_ways() {
    let d = offer("permessage-deflate").unwrap();
    assert_eq!(
        d.response_header(),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    assert_eq!(d.server_window_bits, 15);
}

#[test]
fn a_browser_offer_is_accepted() {
    let d = offer("permessage-deflate; client_max_window_bits").unwrap();
    assert_eq!(d.server_window_bits, 15);
    assert!(!d.response_header().contains("window"));
}

#[test]
fn an_offered_server_window_is_answered_and_used() {
    let d = offer("permessage-deflate; server_max_window_bits=10").unwrap();
    assert_eq!(d.server_window_bits, 10);
    assert!(
        d.response_header().ends_with("; server_max_window_bits=10"),
        "{}",
        d.response_header()
    );
    let q = offer("permessage-deflate; server_max_window_bits=\"12\"").unwrap();
    assert_eq!(q.server_window_bits, 12);
}

#[test]
fn a_configured_window_below_fifteen_is_announced_and_caps_an_offer() {
    let c = Compression {
        max_window_bits: 11,
        ..cfg()
    };
    let d = negotiate(["permessage-deflate"], &c).unwrap();
    assert!(d.response_header().ends_with("; server_max_window_bits=11"));
    let d = negotiate(["permessage-deflate; server_max_window_bits=13"], &c).unwrap();
    assert_eq!(d.server_window_bits, 11);
}

#[test]
fn a_server_window_of_eight_is_accepted_and_messages_go_uncompressed() {
    let d = offer("permessage-deflate; server_max_window_bits=8").unwrap();
    assert_eq!(d.server_window_bits, 8);
    assert!(d.response_header().ends_with("server_max_window_bits=8"));
    assert_eq!(d.compress(&[b'a'; 4096]), None);
}

#[test]
fn every_known_parameter_together_is_accepted() {
    assert!(offer("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=15").is_some());
    assert!(offer("PerMessage-Deflate ;Client_Max_Window_Bits=8").is_some());
}

#[test]
fn malformed_offers_are_declined() {
    for bad in [
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=010",
        "permessage-deflate; server_max_window_bits=1a",
        "permessage-deflate; client_max_window_bits=0",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=11",
        "permessage-deflate; mystery",
        "permessage-deflate; ",
        "x-webkit-deflate-frame",
        "",
    ] {
        assert_eq!(offer(bad), None, "{bad:?}");
    }
}

#[test]
fn the_first_acceptable_of_several_offers_is_picked() {
    let d = offer(
        "permessage-deflate; mystery, permessage-deflate; server_max_window_bits=10, permessage-deflate",
    )
    .unwrap();
    assert_eq!(d.server_window_bits, 10);
    // Across several header lines too.
    let d = negotiate(
        [
            "foo, permessage-deflate; server_max_window_bits=99",
            "permessage-deflate; server_max_window_bits=9",
        ],
        &cfg(),
    )
    .unwrap();
    assert_eq!(d.server_window_bits, 9);
}

#[test]
fn a_quoted_comma_does_not_split_an_offer() {
    assert_eq!(
        offer("permessage-deflate; server_max_window_bits=\"10,permessage-deflate\""),
        None
    );
}

#[test]
fn nothing_is_negotiated_when_the_route_has_compression_off() {
    assert_eq!(
        negotiate(["permessage-deflate"], &Compression::default()),
        None
    );
}

#[test]
fn messages_under_the_threshold_are_not_compressed() {
    let d = offer("permessage-deflate").unwrap();
    assert_eq!(d.compress(&[b'a'; 1023]), None);
    let c = d.compress(&[b'a'; 1024]).unwrap();
    assert_eq!(inflate(&c, 1024).unwrap(), vec![b'a'; 1024]);
}

/// A message cut short inside a DEFLATE block: appending the tail (§7.2.2) does not complete
/// it, so what it inflates to is not what was sent.
#[test]
fn a_message_cut_off_inside_a_block_does_not_inflate() {
    // A 174-byte JSON text at level 1 without its last 6 bytes (found by a probe: it was
    // delivered as 58 bytes).
    let cut = [
        0xaa, 0x56, 0xca, 0x56, 0xb2, 0x52, 0x2a, 0x23, 0x19, 0x28, 0xd5,
    ];
    assert_eq!(inflate(&cut, 1024), Err(InflateError::Invalid));
    // Every cut of compressed JSON-like texts, at three levels (before the fix nearly all of
    // them inflated to a prefix, often with garbage decoded from the appended tail).
    for n in [174u32, 4000] {
        let text: Vec<u8> = (0..n)
            .map(|i| {
                b"{\"k\":\"switchboard rooms fan out messages\"} "[(i % 43) as usize]
                    ^ (i / 97) as u8
            })
            .collect();
        for level in [1, 6, 9] {
            let whole = compress(&text, level, 15).unwrap();
            assert_eq!(inflate(&whole, 8192).unwrap(), text);
            for at in 1..whole.len() {
                assert_eq!(
                    inflate(&whole[..at], 8192),
                    Err(InflateError::Invalid),
                    "{n} bytes at level {level}, cut at {at} of {}",
                    whole.len()
                );
            }
        }
    }
}

#[test]
fn a_message_that_keeps_the_tail_the_sender_should_have_removed_still_inflates() {
    let mut kept = HELLO.to_vec();
    kept.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
    assert_eq!(inflate(&kept, 1024).unwrap(), b"Hello");
}

#[test]
fn an_empty_compressed_payload_is_the_empty_message() {
    assert_eq!(inflate(&[], 1024).unwrap(), b"");
    assert_eq!(inflate(&[0x00], 1024).unwrap(), b"");
}

#[test]
fn a_final_empty_block_the_tail_completes_ends_the_message() {
    // "Hello" then the header of an empty stored block with BFINAL set: the tail is its
    // lengths.
    let last = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x04];
    assert_eq!(inflate(&last, 1024).unwrap(), b"Hello");
}

#[test]
fn two_flushes_with_only_the_last_tail_removed_inflate() {
    let twice = [
        0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00, 0x00, 0xff, 0xff, 0x00,
    ];
    assert_eq!(inflate(&twice, 1024).unwrap(), b"Hello");
}

#[test]
fn a_message_whose_output_fills_the_first_buffer_exactly_inflates() {
    let text: Vec<u8> = (0..INFLATE_CHUNK as u32)
        .map(|i| b"abcdefghij"[(i % 10) as usize])
        .collect();
    let c = compress(&text, 6, 15).unwrap();
    assert_eq!(inflate(&c, 1 << 20).unwrap(), text);
}

#[test]
fn blocks_after_a_final_block_are_read_as_a_new_stream() {
    // RFC 7692 §7.2.1 lets a message use blocks with BFINAL set; "Hello" in a final block,
    // then "World" from a fresh compressor (sync flush, tail removed).
    let two = [
        0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x0a, 0xcf, 0x2f, 0xca, 0x49, 0x01, 0x00,
    ];
    assert_eq!(inflate(&two, 1024).unwrap(), b"HelloWorld");
    // Bytes after a final block that are no DEFLATE data are refused, not ignored.
    let junk = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x12, 0x34, 0x56];
    assert_eq!(inflate(&junk, 1024), Err(InflateError::Invalid));
}
