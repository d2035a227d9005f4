//! Buffer messages: `pack` then `unpack` gives back the same records in order, every message and
//! every `SendMessageBatch` stays within SQS's limits, DynamoDB's largest item always fits, and
//! malformed bodies are typed errors, never panics.

mod common;

use base64::Engine;
use common::{key, LOCAL};
use ferry_core::buffer::{
    pack, unpack, BufferBatch, UnpackError, ATTRIBUTE_RESERVE_BYTES, FORMAT_V1_TEXT_NUMBERS,
    FORMAT_VERSION, MAX_BODY_BYTES, MAX_PAYLOAD_BYTES, SQS_MAX_BATCH_BYTES, SQS_MAX_BATCH_ENTRIES,
    SQS_MAX_MESSAGE_BYTES,
};
use ferry_core::codec::{self, DecodeError};
use ferry_core::{AttributeValue, ChangeRecord, Item, Version};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// DynamoDB's item size limit.
const DYNAMODB_MAX_ITEM: usize = 400 * 1024;

#[derive(Clone, Copy, Debug)]
enum Body {
    /// Random bytes: lz4 cannot shrink them.
    Incompressible,
    /// Words from a small vocabulary: compresses well.
    Compressible,
    /// Half and half.
    Mixed,
}

fn body_bytes(kind: Body, size: usize, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = vec![0u8; size];
    match kind {
        Body::Incompressible => rng.fill_bytes(&mut out),
        Body::Compressible => {
            const WORDS: &[&[u8]] = &[b"ferry ", b"region ", b"order ", b"paid ", b"stream "];
            let mut i = 0;
            while i < size {
                let w = WORDS[rng.gen_range(0..WORDS.len())];
                let n = w.len().min(size - i);
                out[i..i + n].copy_from_slice(&w[..n]);
                i += n;
            }
        }
        Body::Mixed => {
            let half = size / 2;
            rng.fill_bytes(&mut out[..half]);
            out[half..].fill(b'x');
        }
    }
    out
}

/// A record whose item is about `size` bytes, most of it one binary attribute.
fn record(i: usize, size: usize, kind: Body, seed: u64) -> ChangeRecord {
    let version = Version::new(1_700_000_000_000 + i as u64, LOCAL);
    let mut image: Item = key(&format!("k{i}"));
    image.insert(
        "body".into(),
        AttributeValue::B(body_bytes(kind, size, seed)),
    );
    image.insert("n".into(), AttributeValue::N(format!("{seed}.{i}")));
    version.stamp_into(&mut image, &common::config().names);
    ChangeRecord {
        key: key(&format!("k{i}")),
        image,
        tombstone: false,
        version,
        source_region: LOCAL.into(),
        written_at_ms: 1_700_000_000_000 + i as u64,
    }
}

fn kind() -> impl Strategy<Value = Body> {
    prop_oneof![
        Just(Body::Incompressible),
        Just(Body::Compressible),
        Just(Body::Mixed)
    ]
}

/// Mostly small records, some medium, a few up to DynamoDB's maximum.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0usize..2_048,
        3 => 2_048usize..65_536,
        1 => 65_536usize..=DYNAMODB_MAX_ITEM,
    ]
}

/// Checks every SQS limit and returns the records read back, in order.
fn check_limits_and_unpack(batches: &[BufferBatch]) -> Vec<ChangeRecord> {
    let mut out = Vec::new();
    for batch in batches {
        assert!(!batch.is_empty(), "no empty batch");
        assert!(
            batch.len() <= SQS_MAX_BATCH_ENTRIES,
            "{} entries",
            batch.len()
        );
        let total: usize = batch
            .iter()
            .map(|m| m.body.len() + ATTRIBUTE_RESERVE_BYTES)
            .sum();
        assert!(total <= SQS_MAX_BATCH_BYTES, "batch of {total} bytes");
        for m in batch {
            assert!(
                m.body.len() <= MAX_BODY_BYTES,
                "body of {} bytes",
                m.body.len()
            );
            assert!(m.body.len() + ATTRIBUTE_RESERVE_BYTES <= SQS_MAX_MESSAGE_BYTES);
            assert!(m.records >= 1, "no empty message");
            let records = unpack(&m.body).expect("a packed message unpacks");
            assert_eq!(records.len(), m.records, "the message's record count");
            out.extend(records);
        }
    }
    out
}

#[test]
fn sqs_limits_are_the_documented_ones() {
    assert_eq!(SQS_MAX_MESSAGE_BYTES, 1_048_576);
    assert_eq!(SQS_MAX_BATCH_BYTES, 1_048_576);
    assert_eq!(SQS_MAX_BATCH_ENTRIES, 10);
}

// A body plus its attributes fits one message (checked at compile time).
const _: () = assert!(MAX_BODY_BYTES + ATTRIBUTE_RESERVE_BYTES <= SQS_MAX_MESSAGE_BYTES);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn pack_then_unpack_is_identity_within_limits(
        specs in prop::collection::vec((size(), kind(), any::<u64>()), 0..14)
    ) {
        let records: Vec<ChangeRecord> = specs
            .iter()
            .enumerate()
            .map(|(i, (size, kind, seed))| record(i, *size, *kind, *seed))
            .collect();
        let batches = pack(&records).expect("every record up to 400 KB fits");
        let back = check_limits_and_unpack(&batches);
        prop_assert_eq!(back, records);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// Many small records: several messages, each as full as the limit allows.
    #[test]
    fn many_small_records_keep_their_order(
        count in 1_000usize..4_000,
        kind in kind(),
        seed in any::<u64>(),
    ) {
        let records: Vec<ChangeRecord> = (0..count)
            .map(|i| record(i, 200 + (i * 37) % 1_500, kind, seed ^ i as u64))
            .collect();
        let batches = pack(&records).expect("packs");
        let back = check_limits_and_unpack(&batches);
        prop_assert_eq!(&back, &records);
    }
}

#[test]
fn empty_backlog_packs_to_nothing() {
    assert_eq!(pack(&[]), Ok(vec![]));
}

#[test]
fn a_largest_incompressible_item_always_fits() {
    for seed in 0..3 {
        let r = record(0, DYNAMODB_MAX_ITEM, Body::Incompressible, seed);
        assert!(r.encoded_len() > DYNAMODB_MAX_ITEM);
        let batches = pack(std::slice::from_ref(&r)).expect("a 400 KB item fits one message");
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].len(), 1);
        assert_eq!(batches[0][0].records, 1);
        assert_eq!(check_limits_and_unpack(&batches), vec![r]);
    }
    // Several of them in a row: each still fits, none is split, the batches stay under 1 MiB.
    let rs: Vec<ChangeRecord> = (0..4)
        .map(|i| record(i, DYNAMODB_MAX_ITEM, Body::Incompressible, 100 + i as u64))
        .collect();
    let batches = pack(&rs).expect("packs");
    assert_eq!(check_limits_and_unpack(&batches), rs);
    assert_eq!(
        batches.iter().map(Vec::len).sum::<usize>(),
        4,
        "one per message"
    );
}

#[test]
fn a_message_carries_hundreds_of_1kb_records() {
    let records: Vec<ChangeRecord> = (0..2_000)
        .map(|i| record(i, 1_000, Body::Incompressible, i as u64))
        .collect();
    let batches = pack(&records).expect("packs");
    let first = &batches[0][0];
    assert!(
        first.records >= 500,
        "a 1 MiB message should carry hundreds of incompressible 1 KB records, got {}",
        first.records
    );
    let messages = batches.iter().map(Vec::len).sum::<usize>();
    assert!(messages <= 3, "2 000 × 1 KB in {messages} messages");
    assert_eq!(check_limits_and_unpack(&batches), records);
}

#[test]
fn a_record_too_large_for_any_message_is_an_error_naming_its_key() {
    let huge = record(7, 900_000, Body::Incompressible, 1);
    let small = record(8, 10, Body::Compressible, 2);
    let err = pack(&[small.clone(), huge.clone(), small]).expect_err("cannot fit");
    assert_eq!(
        err,
        ferry_core::buffer::PackError::RecordTooLarge {
            key: "pk=S:k7".into(),
            bytes: huge.encoded_len(),
        }
    );
}

/// A 400 KB item by DynamoDB's own size rules (a number counts one byte per two significant
/// digits plus one; a set's members carry no overhead). Random digits do not compress: as text
/// (buffer format 1) the numbers took twice their DynamoDB size and the item did not fit; packed
/// 4 bits per character (format 2) it does. The contract says DynamoDB's largest item always fits.
#[test]
fn a_largest_item_of_38_digit_numbers_fits() {
    let mut rng = StdRng::seed_from_u64(0);
    let mut seen = std::collections::HashSet::new();
    let mut ns = Vec::new();
    // 20 400 × (19 + 1) bytes + names ≈ 408 000 bytes ≤ 400 KB.
    while ns.len() < 20_400 {
        let d: String = (0..38)
            .map(|i| char::from(b'0' + rng.gen_range(u8::from(i == 0)..10)))
            .collect();
        let n = format!("-{}.{}", &d[..19], &d[19..]);
        if seen.insert(n.clone()) {
            ns.push(n);
        }
    }
    let mut r = record(0, 0, Body::Compressible, 0);
    r.image.remove("body");
    r.image.insert("s".into(), AttributeValue::Ns(ns));
    let batches = pack(std::slice::from_ref(&r)).expect("DynamoDB's largest item fits");
    assert_eq!(check_limits_and_unpack(&batches), vec![r]);
}

// ---- malformed input ----

fn framed(payload_lz4: &[u8], format: u8) -> String {
    let mut f = b"FRY".to_vec();
    f.push(format);
    f.extend_from_slice(payload_lz4);
    B64.encode(f)
}

/// A message body around a raw payload (count ‖ records…), compressed as `pack` does.
fn body_of_payload(payload: &[u8]) -> String {
    framed(
        &lz4_flex::block::compress_prepend_size(payload),
        FORMAT_VERSION,
    )
}

fn valid_body() -> (String, Vec<ChangeRecord>) {
    let records: Vec<ChangeRecord> = (0..5)
        .map(|i| record(i, 300, Body::Mixed, i as u64))
        .collect();
    let batches = pack(&records).expect("packs");
    assert_eq!(batches.len(), 1);
    (batches[0][0].body.clone(), records)
}

#[test]
fn each_malformation_has_its_typed_error() {
    assert!(matches!(unpack("not base64!"), Err(UnpackError::Base64(_))));
    assert!(matches!(unpack("QUJD="), Err(UnpackError::Base64(_))));
    assert_eq!(unpack(""), Err(UnpackError::BadMagic));
    assert_eq!(unpack(&B64.encode(b"FRY")), Err(UnpackError::BadMagic));
    assert_eq!(
        unpack(&B64.encode(b"FRX\x01abcdefgh")),
        Err(UnpackError::BadMagic)
    );
    assert_eq!(
        unpack(&B64.encode(br#"{"Records":[]}"#)),
        Err(UnpackError::BadMagic),
        "a JSON body is not a Ferry message"
    );
    assert_eq!(
        unpack(&framed(b"\0\0\0\0", 3)),
        Err(UnpackError::UnknownFormat(3))
    );
    assert_eq!(
        unpack(&framed(b"\0\0\0\0", 0)),
        Err(UnpackError::UnknownFormat(0))
    );
    // Size prefix: missing, absurd, or lying.
    assert!(matches!(
        unpack(&framed(b"\x05\0", FORMAT_VERSION)),
        Err(UnpackError::Decompress(_))
    ));
    let absurd = (MAX_PAYLOAD_BYTES as u32 + 1).to_le_bytes();
    assert_eq!(
        unpack(&framed(&absurd, FORMAT_VERSION)),
        Err(UnpackError::TooLarge(MAX_PAYLOAD_BYTES + 1))
    );
    // A size prefix smaller than what the block decompresses to (lz4_flex documents a
    // possible panic for this; it must come back as an error).
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut short = lz4_flex::block::compress_prepend_size(&data);
    for claimed in [0u32, 10, 999] {
        short[..4].copy_from_slice(&claimed.to_le_bytes());
        assert!(matches!(
            unpack(&framed(&short, FORMAT_VERSION)),
            Err(UnpackError::Decompress(_))
        ));
    }
    // Corrupt lz4: a match offset pointing before the start of the output.
    let corrupt = [8u8, 0, 0, 0, 0x04, 0xff, 0xff];
    assert!(matches!(
        unpack(&framed(&corrupt, FORMAT_VERSION)),
        Err(UnpackError::Decompress(_))
    ));
}

#[test]
fn malformed_payloads_are_decode_errors() {
    // count 1, then a record whose key holds a value with an unknown type tag.
    let mut p = vec![1u8];
    codec::put_varint(&mut p, 5);
    codec::put_str(&mut p, "r1");
    codec::put_str(&mut p, "r1");
    codec::put_varint(&mut p, 5);
    p.push(0);
    codec::put_varint(&mut p, 1);
    codec::put_str(&mut p, "pk");
    let tag_at = p.len();
    p.push(0x0a);
    assert_eq!(
        unpack(&body_of_payload(&p)),
        Err(UnpackError::Decode(DecodeError::UnknownTag {
            tag: 0x0a,
            at: tag_at
        }))
    );
    // The same record cut short.
    p.truncate(tag_at);
    assert_eq!(
        unpack(&body_of_payload(&p)),
        Err(UnpackError::Decode(DecodeError::Truncated(tag_at)))
    );
    // A string that is not UTF-8.
    let mut p = vec![1u8];
    codec::put_varint(&mut p, 5);
    let at = p.len();
    codec::put_bytes(&mut p, &[0xff, 0xfe]);
    assert_eq!(
        unpack(&body_of_payload(&p)),
        Err(UnpackError::Decode(DecodeError::Utf8(at)))
    );
    // A length beyond the input.
    let mut p = vec![1u8];
    codec::put_varint(&mut p, 5);
    let at = p.len();
    codec::put_varint(&mut p, 1_000_000);
    assert_eq!(
        unpack(&body_of_payload(&p)),
        Err(UnpackError::Decode(DecodeError::Length {
            len: 1_000_000,
            at
        }))
    );
    // More records announced than present.
    assert_eq!(
        unpack(&body_of_payload(&[3])),
        Err(UnpackError::Decode(DecodeError::Truncated(1)))
    );
    // Junk after the last record.
    let (_, records) = valid_body();
    let mut p = vec![records.len() as u8];
    for r in &records {
        codec::put_record(&mut p, r);
    }
    assert_eq!(unpack(&body_of_payload(&p)), Ok(records));
    p.extend_from_slice(b"junk");
    assert_eq!(
        unpack(&body_of_payload(&p)),
        Err(UnpackError::Decode(DecodeError::Trailing(4)))
    );
}

fn is_base64_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '='
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_text_is_refused_without_panic(s in any::<String>()) {
        let r = unpack(&s);
        if s.trim().chars().any(|c| !is_base64_char(c)) {
            prop_assert!(matches!(r, Err(UnpackError::Base64(_))), "{:?}", r);
        } else {
            prop_assert!(r.is_err(), "random text unpacked: {:?}", r);
        }
    }

    #[test]
    fn any_bytes_without_the_magic_are_bad_magic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        prop_assume!(!bytes.starts_with(b"FRY"));
        prop_assert_eq!(unpack(&B64.encode(&bytes)), Err(UnpackError::BadMagic));
    }

    #[test]
    fn any_other_format_version_is_unknown(
        format in any::<u8>(),
        rest in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        prop_assume!(format != FORMAT_VERSION && format != FORMAT_V1_TEXT_NUMBERS);
        prop_assert_eq!(unpack(&framed(&rest, format)), Err(UnpackError::UnknownFormat(format)));
    }

    /// Garbage after a valid header: whatever lz4 and the codec make of it, never a panic.
    #[test]
    fn garbage_after_the_header_never_panics(rest in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = unpack(&framed(&rest, FORMAT_VERSION));
        let _ = unpack(&framed(&rest, FORMAT_V1_TEXT_NUMBERS));
    }

    /// Garbage that decompresses fine: the codec's reader gets arbitrary bytes.
    #[test]
    fn garbage_payload_never_panics(payload in prop::collection::vec(any::<u8>(), 0..512)) {
        let r = unpack(&body_of_payload(&payload));
        if let Ok(records) = r {
            // Only a payload that really encodes records can be accepted: re-encoding them
            // gives the payload back.
            let mut again = Vec::new();
            codec::put_varint(&mut again, records.len() as u64);
            for rec in &records {
                codec::put_record(&mut again, rec);
            }
            prop_assert_eq!(again.len(), payload.len());
        }
    }

    #[test]
    fn every_truncation_is_an_error(cut in any::<prop::sample::Index>()) {
        let (body, _) = valid_body();
        let frame = B64.decode(&body).expect("base64");
        let at = cut.index(frame.len());
        prop_assert!(unpack(&B64.encode(&frame[..at])).is_err(), "cut at {}", at);
        let at = cut.index(body.len());
        prop_assert!(unpack(&body[..at]).is_err(), "body cut at {}", at);
    }

    /// Flipped bytes in the compressed part: a typed error or other records (lz4 has no
    /// checksum), never a panic.
    #[test]
    fn corrupt_lz4_never_panics(
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..8)
    ) {
        let (body, records) = valid_body();
        let mut frame = B64.decode(&body).expect("base64");
        for (i, x) in &flips {
            let at = 4 + i.index(frame.len() - 4);
            frame[at] ^= x;
        }
        if let Ok(back) = unpack(&B64.encode(&frame)) {
            prop_assert!(back.len() <= 5 || back != records);
        }
    }
}

#[test]
fn deeply_nested_garbage_is_refused_not_a_stack_overflow() {
    // count 1, a record, a key with one attribute that opens lists a million levels deep.
    let mut p = vec![1u8];
    codec::put_varint(&mut p, 5);
    codec::put_str(&mut p, "r1");
    codec::put_str(&mut p, "r1");
    codec::put_varint(&mut p, 5);
    p.push(0);
    codec::put_varint(&mut p, 1);
    codec::put_str(&mut p, "pk");
    for _ in 0..1_000_000 {
        p.extend_from_slice(&[6, 1]); // L of one element
    }
    assert_eq!(
        unpack(&body_of_payload(&p)),
        Err(UnpackError::Decode(DecodeError::TooDeep))
    );
}
