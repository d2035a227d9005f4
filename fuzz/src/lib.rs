//! What the fuzz targets share: the properties every decoded value must have, the configurations
//! stream records are classified with, and a generator of change records from fuzz bytes.
//!
//! The targets (`fuzz_targets/`) and what each feeds its decoder:
//!
//! | target | decoder | input |
//! |---|---|---|
//! | `unpack` | `ferry_core::buffer::unpack` | a message body, its frame, or its raw payload |
//! | `item_codec` | `ferry_core::codec` | an encoded item or record, or bytes a record is built from |
//! | `classify` | `ferry_core::classify` | a stream record as DynamoDB JSON |
//! | `checkpoint` | `ferry backfill --resume`'s `Checkpoint` | a checkpoint file (feature `cli`) |
//! | `dlq` | `ferry dlq`'s `describe` | a DLQ message's attributes and body (feature `cli`) |

use base64::Engine;
use ferry_core::buffer::{pack, unpack, PackError};
use ferry_core::codec::{self, MAX_DEPTH};
use ferry_core::{AttributeValue, ChangeRecord, Config, Item, MergeMode, Version};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;

pub const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The local region of the classifying configurations (the stream fixtures' region).
pub const LOCAL: &str = "us-east-1";

/// The configurations stream records are classified with, as the core's tests build them: the
/// local region, partition key `pk`, default attribute names, one destination; item mode and
/// attribute mode.
pub fn configs() -> &'static [Config; 2] {
    static CONFIGS: OnceLock<[Config; 2]> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let config = |mode: MergeMode| {
            let mut c = Config::new(LOCAL, "pk");
            c.destinations = vec!["eu-west-1".to_string()];
            c.merge_mode = mode;
            c.validate().expect("the fuzz config is valid");
            c
        };
        [config(MergeMode::Item), config(MergeMode::Attribute)]
    })
}

/// `FRY ‖ format ‖ size ‖ lz4(payload)`, base64'd: a body around any payload, as `pack` frames.
pub fn body_of_payload(payload: &[u8], format: u8) -> String {
    let mut frame = b"FRY".to_vec();
    frame.push(format);
    frame.extend_from_slice(&lz4_flex::block::compress_prepend_size(payload));
    B64.encode(frame)
}

/// Records that decoded (or that a stream record was classified into) travel a buffer intact:
/// `pack` writes them, `unpack` reads back the same records in order.
pub fn assert_packs_back(records: &[ChangeRecord]) {
    let batches = match pack(records) {
        Ok(batches) => batches,
        // A record over a message's size is refused by name: not a bug of either side.
        Err(PackError::RecordTooLarge { .. }) => return,
    };
    let mut back = Vec::with_capacity(records.len());
    for m in batches.iter().flatten() {
        let got = unpack(&m.body).expect("a body pack wrote unpacks");
        assert_eq!(got.len(), m.records, "records in the message");
        back.extend(got);
    }
    assert!(back == records, "pack then unpack changed the records");
}

/// Re-encoding a decoded record and decoding it again gives the same record.
pub fn assert_record_round_trips(record: &ChangeRecord) {
    let mut bytes = Vec::new();
    codec::put_record(&mut bytes, record);
    let mut reader = codec::Reader::new(&bytes);
    let back = reader.record().expect("an encoded record decodes");
    reader.finish().expect("nothing after the record");
    assert!(&back == record, "encode then decode changed the record");
}

// ---- what a decoder holds ----

/// The system allocator, counting the bytes live and their peak (libFuzzer runs the target on one
/// thread).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match new_size.checked_sub(layout.size()) {
            Some(more) => grew(more),
            None => {
                LIVE.fetch_sub(layout.size() - new_size, Relaxed);
            }
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What a decoder may hold at once for `input_len` bytes it reads without decompressing them: the
/// decoded values themselves take up to ~30 times their encoding (a 2-byte value is a 56-byte
/// `AttributeValue`, a map entry also its hash slot), twice that while a collection grows; plus
/// the room reserved up front from counts, at most `MAX_RESERVE` entries per nesting level.
pub fn justified(input_len: usize) -> usize {
    256 * input_len + (1 << 20)
}

/// Runs `decode` on `input_len` bytes of input and fails if it held more than [`justified`]
/// (what it returns included).
pub fn within_justified<T>(input_len: usize, decode: impl FnOnce() -> T) -> T {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let out = decode();
    let held = PEAK.load(Relaxed).saturating_sub(base);
    assert!(
        held <= justified(input_len),
        "held {held} bytes at once decoding {input_len} bytes (at most {} justified)",
        justified(input_len)
    );
    out
}

// ---- records built from bytes ----

/// Reads choices off fuzz bytes; zeros once they run out (so every input builds something).
pub struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    pub fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn below(&mut self, n: u8) -> u8 {
        self.byte() % n
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |v, _| v << 8 | u64::from(self.byte()))
    }

    fn bytes(&mut self) -> Vec<u8> {
        let n = usize::from(self.below(32)).min(self.0.len());
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken.to_vec()
    }

    fn string(&mut self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    /// Mostly number-like text (what DynamoDB sends), sometimes anything.
    fn number(&mut self) -> String {
        if self.below(8) == 0 {
            return self.string();
        }
        const CHARS: &[u8] = b"0123456789-.+Ee";
        let n = self.below(40);
        (0..n)
            .map(|_| char::from(CHARS[usize::from(self.below(CHARS.len() as u8))]))
            .collect()
    }

    fn value(&mut self, depth: usize) -> AttributeValue {
        let nest = depth < MAX_DEPTH.min(6);
        let count = |b: &mut Self| usize::from(b.below(5));
        match self.below(if nest { 10 } else { 5 }) {
            0 => AttributeValue::S(self.string()),
            1 => AttributeValue::N(self.number()),
            2 => AttributeValue::B(self.bytes()),
            3 => AttributeValue::Bool(self.byte() & 1 == 1),
            4 => AttributeValue::Null(self.byte() & 1 == 1),
            5 => AttributeValue::M(self.item(depth + 1)),
            6 => AttributeValue::L((0..count(self)).map(|_| self.value(depth + 1)).collect()),
            7 => AttributeValue::Ss((0..count(self)).map(|_| self.string()).collect()),
            8 => AttributeValue::Ns((0..count(self)).map(|_| self.number()).collect()),
            _ => AttributeValue::Bs((0..count(self)).map(|_| self.bytes()).collect()),
        }
    }

    fn item(&mut self, depth: usize) -> Item {
        let n = self.below(6);
        (0..n).map(|_| (self.string(), self.value(depth))).collect()
    }

    pub fn record(&mut self) -> ChangeRecord {
        ChangeRecord {
            version: Version {
                ts_ms: self.u64(),
                origin: self.string(),
            },
            source_region: self.string(),
            written_at_ms: self.u64(),
            tombstone: self.byte() & 1 == 1,
            key: self.item(0),
            image: self.item(0),
        }
    }
}
