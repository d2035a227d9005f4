//! The decoders of outside input under hostile bytes (issue #17): every input the fuzz targets
//! (`fuzz/`, `make fuzz`) found to crash, hang or over-allocate is a test here, with the bound
//! it broke. A buffer message body is whatever anyone allowed to send to the queue put there:
//! [`unpack`] must refuse it with a typed error, never panic, and never hold more memory than the
//! body's own size justifies.

mod common;

use base64::Engine;
use common::LOCAL;
use ferry_core::buffer::{pack, unpack, UnpackError, FORMAT_VERSION, MAX_PAYLOAD_BYTES};
use ferry_core::codec::{self, DecodeError};
use ferry_core::{AttributeValue, ChangeRecord, Item, Version};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

// ---- what a decoder holds at once ----

/// The system allocator, counting per thread the bytes live and their peak (tests run on
/// threads of their own, so each measures only itself).
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What `f` returns, and the most it had allocated at once on this thread (its result included).
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get) - base;
    (out, peak.max(0) as usize)
}

// ---- bodies ----

fn framed(frame_after_format: &[u8], format: u8) -> String {
    let mut f = b"FRY".to_vec();
    f.push(format);
    f.extend_from_slice(frame_after_format);
    B64.encode(f)
}

/// A message body around a raw payload (count ‖ records…), compressed as `pack` does.
fn body_of_payload(payload: &[u8]) -> String {
    framed(
        &lz4_flex::block::compress_prepend_size(payload),
        FORMAT_VERSION,
    )
}

fn record(pk: &str, value: AttributeValue) -> ChangeRecord {
    let key: Item = [("pk".to_string(), AttributeValue::S(pk.into()))].into();
    let mut image = key.clone();
    image.insert("v".into(), value);
    ChangeRecord {
        key,
        image,
        tombstone: false,
        version: Version::new(1_700_000_000_000, LOCAL),
        source_region: LOCAL.into(),
        written_at_ms: 1_700_000_000_000,
    }
}

fn payload_of(records: &[ChangeRecord]) -> Vec<u8> {
    let mut p = Vec::new();
    codec::put_varint(&mut p, records.len() as u64);
    for r in records {
        codec::put_record(&mut p, r);
    }
    p
}

// ---- the decompression bomb ----

/// A body far under SQS's 1 MiB whose records inflate to 16 MiB: well-formed, but more than a
/// message of packed records ever holds (a full message of realistic records is ~1.5 MiB). It
/// is refused from its size prefix, before anything is decompressed.
#[test]
fn a_small_body_that_inflates_past_the_payload_limit_is_refused() {
    let bomb = record("bomb", AttributeValue::B(vec![0; 16 << 20]));
    let payload = payload_of(std::slice::from_ref(&bomb));
    let body = body_of_payload(&payload);
    assert!(body.len() < 128 * 1024, "{} bytes", body.len());
    drop(bomb);
    let (result, peak) = peak_of(|| unpack(&body).map(|records| records.len()));
    let error = match result {
        Ok(n) => panic!("{n} records of a {}-byte payload accepted", payload.len()),
        Err(e) => e,
    };
    assert_eq!(error, UnpackError::TooLarge(payload.len()));
    let message = error.to_string();
    assert!(
        message.contains(&format!("over the limit of {MAX_PAYLOAD_BYTES} bytes")),
        "{message}"
    );
    assert!(
        peak < 2 * body.len(),
        "held {peak} bytes for a {}-byte body",
        body.len()
    );
}

/// The limit is a few MiB above what a message legitimately holds, and `pack` keeps to it: the
/// most compressible records (lz4 shrinks zeros ~250:1) come out in messages `unpack` reads.
#[test]
fn pack_never_writes_a_message_over_the_limit() {
    const { assert!(MAX_PAYLOAD_BYTES >= 4 << 20 && MAX_PAYLOAD_BYTES <= 16 << 20) };
    let records: Vec<ChangeRecord> = (0..200)
        .map(|i| record(&format!("k{i}"), AttributeValue::B(vec![0; 100 * 1024])))
        .collect();
    let mut back = Vec::new();
    for batch in pack(&records).expect("packs") {
        for m in batch {
            let frame = B64.decode(&m.body).expect("base64");
            let size = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]) as usize;
            assert!(size <= MAX_PAYLOAD_BYTES, "{size}");
            back.extend(unpack(&m.body).expect("unpacks"));
        }
    }
    assert_eq!(back, records);
}

/// A size prefix that no lz4 block of this length can fill (lz4 expands at most ~255:1): refused
/// without allocating the claimed size.
#[test]
fn a_size_prefix_the_block_cannot_fill_allocates_nothing_of_it() {
    let claimed = (MAX_PAYLOAD_BYTES as u32 - 1).to_le_bytes();
    let mut frame = claimed.to_vec();
    frame.extend_from_slice(&[0x10, 0x00]); // one literal: a valid block of one byte
    let body = framed(&frame, FORMAT_VERSION);
    let (result, peak) = peak_of(|| unpack(&body));
    assert!(
        matches!(&result, Err(UnpackError::Decompress(m)) if m.contains("cannot hold")),
        "{result:?}"
    );
    assert!(
        peak < 4096,
        "held {peak} bytes for a {}-byte body",
        body.len()
    );
}

/// The densest block lz4 writes (all zeros) stays within the bound the size prefix is held to.
#[test]
fn the_densest_lz4_block_is_within_the_expansion_bound() {
    let payload = vec![0u8; MAX_PAYLOAD_BYTES];
    let block = lz4_flex::block::compress(&payload);
    assert!(
        payload.len() <= ferry_core::buffer::max_decompressed(block.len()),
        "{} bytes from {}",
        payload.len(),
        block.len()
    );
}

/// `pack` writes the exact payload size: a prefix that overstates it is a corrupt body (it used
/// to be accepted, after allocating the stated size).
#[test]
fn a_size_prefix_larger_than_the_payload_is_refused() {
    let payload = payload_of(&[record("k", AttributeValue::S("v".into()))]);
    let mut frame = lz4_flex::block::compress_prepend_size(&payload);
    let stated = payload.len() as u32 + 100;
    frame[..4].copy_from_slice(&stated.to_le_bytes());
    assert!(
        matches!(unpack(&framed(&frame, FORMAT_VERSION)), Err(UnpackError::Decompress(m)) if m.contains("size prefix")),
    );
}

// ---- counts read from the input are claims ----

/// A record count of 2^40 in front of nothing: no room is reserved for records that are not
/// there (it used to reserve 100 000 of them, ~17 MB, for a 10-byte payload).
#[test]
fn a_record_count_reserves_no_room_for_absent_records() {
    let mut payload = Vec::new();
    codec::put_varint(&mut payload, 1 << 40);
    let body = body_of_payload(&payload);
    let (result, peak) = peak_of(|| unpack(&body));
    assert!(
        matches!(result, Err(UnpackError::Decode(DecodeError::Truncated(_)))),
        "{result:?}"
    );
    assert!(
        peak < 64 * 1024,
        "held {peak} bytes for a {}-byte body",
        body.len()
    );
}

/// Maps and lists 32 deep, each claiming as many entries as bytes are left, over 1 MiB of junk:
/// each level used to reserve room for all of them (~60 MB per level, 2 GB in all) before the
/// first entry failed.
#[test]
fn nested_counts_reserve_no_room_for_absent_values() {
    const JUNK: usize = 1 << 20;
    let mut bytes = Vec::new();
    codec::put_varint(&mut bytes, 1);
    codec::put_str(&mut bytes, "a");
    for level in 0..codec::MAX_DEPTH {
        bytes.push(if level % 2 == 0 { 6 } else { 5 }); // L, then M
        codec::put_varint(&mut bytes, (JUNK / 4) as u64);
        if level % 2 == 1 {
            codec::put_str(&mut bytes, "b"); // the map entry's name
        }
    }
    bytes.resize(bytes.len() + JUNK, 0xee); // an unknown type tag, again and again
    let (result, peak) = peak_of(|| codec::decode_item(&bytes));
    assert!(
        matches!(result, Err(DecodeError::UnknownTag { tag: 0xee, .. })),
        "{result:?}"
    );
    assert!(
        peak < bytes.len(),
        "held {peak} bytes for {} bytes of input",
        bytes.len()
    );
}
