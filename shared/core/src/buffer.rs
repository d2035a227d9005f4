//! Buffer messages: many change records packed into one SQS message, compressed.
//!
//! A message body is `base64("FRY" ‖ format ‖ lz4(count ‖ records…))` (the records in
//! [`crate::codec`]'s encoding, the lz4 block prefixed with its uncompressed size). SQS bodies must
//! be text, hence base64. The format byte lets a drain reject what it does not understand.
//!
//! Formats: 1 wrote numbers as their text; 2 (what [`pack`] writes) packs them 4 bits per
//! character ([`codec::Numbers`]), so that DynamoDB's largest item fits even when it is made of
//! numbers. [`unpack`] reads both. Drains must be upgraded before enqueues: a drain that only
//! reads format 1 refuses format-2 messages as an unknown format.

use crate::codec::{self, DecodeError, Numbers, Reader};
use crate::item::describe_key;
use crate::record::ChangeRecord;
use base64::Engine;

/// SQS: at most 1 MiB per message and per `SendMessageBatch`, at most 10 entries per batch.
pub const SQS_MAX_MESSAGE_BYTES: usize = 1_048_576;
pub const SQS_MAX_BATCH_BYTES: usize = 1_048_576;
pub const SQS_MAX_BATCH_ENTRIES: usize = 10;
/// Room kept in every message for its message attributes (format, record count, a DLQ reason).
pub const ATTRIBUTE_RESERVE_BYTES: usize = 2048;
/// The most a message body may take.
pub const MAX_BODY_BYTES: usize = SQS_MAX_MESSAGE_BYTES - ATTRIBUTE_RESERVE_BYTES;
/// The most a message's payload may decompress to: [`pack`] writes no more, [`unpack`] refuses
/// more from the size prefix, before decompressing anything. A full message of realistic records
/// holds ~1.5 MiB (lz4 shrinks them ~2:1; wordy text ~2.5:1): 8 MiB leaves room for tables that
/// compress far better, while a body of a few tens of KB, which lz4 can inflate ~250 times,
/// cannot make a drain hold more than this per message (issue #17). Was 64 MiB: a message
/// written by an older enqueue between 8 and 64 MiB (records compressing over ~10:1) is refused.
pub const MAX_PAYLOAD_BYTES: usize = 8 * 1024 * 1024;
/// An lz4 block yields fewer than this many bytes per byte of block: a match grows by at most 255
/// bytes per length byte, and a literal costs its own byte.
const LZ4_MAX_EXPANSION: usize = 255;

/// The format [`pack`] writes: 2, numbers packed 4 bits per character. Drains must be upgraded
/// before enqueues (an older drain refuses format 2 as unknown); [`unpack`] reads 2 and 1.
pub const FORMAT_VERSION: u8 = 2;
/// The previous format, numbers as text; still read by [`unpack`], no longer written.
pub const FORMAT_V1_TEXT_NUMBERS: u8 = 1;
const MAGIC: &[u8; 3] = b"FRY";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One SQS message: its body and how many records it carries.
#[derive(Clone, Debug, PartialEq)]
pub struct BufferMessage {
    pub body: String,
    pub records: usize,
}

/// The messages of one `SendMessageBatch` call.
pub type BufferBatch = Vec<BufferMessage>;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PackError {
    #[error("record for key {key} is {bytes} bytes encoded and cannot fit an SQS message")]
    RecordTooLarge { key: String, bytes: usize },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UnpackError {
    #[error("body is not base64: {0}")]
    Base64(String),
    #[error("not a Ferry buffer message (bad magic)")]
    BadMagic,
    #[error("unknown buffer format version {0} (this drain reads {FORMAT_V1_TEXT_NUMBERS} and {FORMAT_VERSION})")]
    UnknownFormat(u8),
    #[error("payload of {0} bytes is over the limit of {MAX_PAYLOAD_BYTES} bytes")]
    TooLarge(usize),
    #[error("payload does not decompress: {0}")]
    Decompress(String),
    #[error("payload is malformed: {0}")]
    Decode(#[from] DecodeError),
}

/// The most an lz4 block of `block_len` bytes can decompress to: a size prefix claiming more is
/// a lie, refused before anything is allocated for it.
pub fn max_decompressed(block_len: usize) -> usize {
    block_len.saturating_mul(LZ4_MAX_EXPANSION)
}

/// The largest raw payload whose worst-case compressed, base64'd body still fits.
fn worst_case_raw_budget() -> usize {
    let compressed_budget = MAX_BODY_BYTES / 4 * 3 - MAGIC.len() - 1 - 4;
    // lz4's worst case is the input plus 1/255 of it plus a small constant.
    (compressed_budget - 16) * 255 / 256
}

/// Bytes before the lz4 block in a framed body: magic, format, uncompressed size (u32 LE).
const HEADER: usize = 3 + 1 + 4;
/// Room kept in front of the encoded records for a message's record count (a varint).
const COUNT_ROOM: usize = 10;
/// How much of the records a first ratio estimate compresses (lz4's window is 64 KiB: beyond it
/// the ratio of homogeneous data hardly changes).
const SAMPLE_BYTES: usize = 128 * 1024;
/// The fill a message aims at, as a share of the body limit, when the size is predicted.
const TARGET_FILL: f64 = 0.95;

fn body_len(compressed: usize) -> usize {
    (HEADER + compressed).div_ceil(3) * 4
}

/// `FRY ‖ format ‖ lz4(payload)` (the block prefixed with the payload's size) into `out`, which
/// is reused between calls (grown, never shrunk); returns how many bytes of `out` it wrote.
fn compress_framed(payload: &[u8], out: &mut Vec<u8>) -> usize {
    let need = HEADER + lz4_flex::block::get_maximum_output_size(payload.len());
    if out.len() < need {
        out.resize(need, 0);
    }
    out[..3].copy_from_slice(MAGIC);
    out[3] = FORMAT_VERSION;
    out[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    // Cannot fail: the output holds lz4's worst case for this input.
    let n = lz4_flex::block::compress_into(payload, &mut out[HEADER..]).unwrap_or(usize::MAX);
    HEADER + n
}

/// The records encoded once, back to back, after [`COUNT_ROOM`] free bytes.
struct Encoded {
    buf: Vec<u8>,
    /// `ends[i]`: where record `i` ends in `buf`.
    ends: Vec<usize>,
}

impl Encoded {
    fn new(records: &[ChangeRecord]) -> Self {
        // A first guess at the size (the buffer grows if the records are larger).
        let guess = records.first().map_or(0, ChangeRecord::encoded_len) * records.len();
        let mut buf = Vec::with_capacity(COUNT_ROOM + guess + guess / 8);
        buf.resize(COUNT_ROOM, 0);
        let mut ends = Vec::with_capacity(records.len());
        for r in records {
            codec::put_record(&mut buf, r);
            ends.push(buf.len());
        }
        Encoded { buf, ends }
    }

    fn start(&self, i: usize) -> usize {
        if i == 0 {
            COUNT_ROOM
        } else {
            self.ends[i - 1]
        }
    }

    fn len(&self, i: usize) -> usize {
        self.ends[i] - self.start(i)
    }

    /// Raw bytes of records `from..to`.
    fn raw(&self, from: usize, to: usize) -> usize {
        self.ends[to - 1] - self.start(from)
    }

    /// The end index of the longest run from `from` whose raw size stays within `budget` (at
    /// least one record).
    fn take_until(&self, from: usize, budget: usize) -> usize {
        let base = self.start(from);
        // `ends` is increasing: the first record ending past the budget, kept at least one.
        let past = self.ends[from..].partition_point(|&e| e - base <= budget);
        from + past.max(1)
    }

    /// The payload of the message carrying records `from..to` (`count ‖ records`), in place:
    /// the count is written over the bytes just before the first record, which belong to
    /// records already packed (or to the free room in front of the first one).
    fn payload(&mut self, from: usize, to: usize) -> &[u8] {
        let mut count = [0u8; COUNT_ROOM];
        let mut at = 0;
        let mut v = (to - from) as u64;
        while v >= 0x80 {
            count[at] = (v as u8) | 0x80;
            v >>= 7;
            at += 1;
        }
        count[at] = v as u8;
        let n = at + 1;
        let begin = self.start(from) - n;
        self.buf[begin..begin + n].copy_from_slice(&count[..n]);
        &self.buf[begin..self.ends[to - 1]]
    }
}

/// Packs records into as few messages as the limits allow, in order, and groups the messages
/// into `SendMessageBatch` calls (≤ 10 entries, ≤ 1 MiB in all). A record that cannot fit any
/// message is an error naming its key; nothing is dropped silently.
///
/// Every record is encoded once, and a message is normally compressed once: its size is predicted
/// from the compression ratio measured so far (a sample of the first records, then each message
/// compressed), and only a message whose prediction overshoots the limit is compressed again,
/// smaller. A run of records within the worst-case budget always fits and is compressed once.
pub fn pack(records: &[ChangeRecord]) -> Result<Vec<BufferBatch>, PackError> {
    let mut encoded = Encoded::new(records);
    let safe = worst_case_raw_budget();
    let mut out: Vec<u8> = Vec::new();
    // Compressed bytes per raw byte, as last measured.
    let mut ratio: Option<f64> = None;
    let mut messages = Vec::new();
    let mut start = 0;
    while start < records.len() {
        let remaining = encoded.raw(start, records.len());
        let mut budget = if remaining <= safe {
            remaining
        } else {
            let r = match ratio {
                Some(r) => r,
                None => {
                    let end = encoded.take_until(start, SAMPLE_BYTES);
                    let raw = encoded.raw(start, end);
                    let n = compress_framed(encoded.payload(start, end), &mut out);
                    (n - HEADER) as f64 / raw.max(1) as f64
                }
            };
            let predicted = predicted_raw(r);
            // Close enough to everything that's left: try it all (the prediction is rough).
            if remaining as f64 <= predicted as f64 * 1.1 {
                remaining
            } else {
                predicted
            }
        };
        budget = budget.clamp(safe.min(remaining), MAX_PAYLOAD_BYTES - COUNT_ROOM);
        loop {
            let end = encoded.take_until(start, budget);
            let raw = encoded.raw(start, end);
            let n = compress_framed(encoded.payload(start, end), &mut out);
            let compressed = n - HEADER;
            ratio = Some(compressed as f64 / raw.max(1) as f64);
            if body_len(compressed) <= MAX_BODY_BYTES && raw + COUNT_ROOM <= MAX_PAYLOAD_BYTES {
                messages.push(BufferMessage {
                    body: B64.encode(&out[..n]),
                    records: end - start,
                });
                start = end;
                break;
            }
            if end - start == 1 {
                return Err(PackError::RecordTooLarge {
                    key: describe_key(&records[start].key),
                    bytes: encoded.len(start),
                });
            }
            // Too big: shrink to what the measured ratio says fits, strictly below this try
            // (and never below the worst-case budget, which always fits).
            let fits = ratio.map_or(safe, predicted_raw);
            budget = fits.min(raw - 1).max(safe.min(raw - 1));
        }
    }
    Ok(batch(messages))
}

/// [`pack`] with at most `per_message` records in a message (the batches still hold up to 10
/// messages): a drain under a write-rate cap re-queues what it could not write in messages the
/// size of a capped take, which the fan-out's workers then share.
pub fn pack_at_most(
    records: &[ChangeRecord],
    per_message: usize,
) -> Result<Vec<BufferBatch>, PackError> {
    let mut messages = Vec::new();
    for chunk in records.chunks(per_message.max(1)) {
        messages.extend(pack(chunk)?.into_iter().flatten());
    }
    Ok(batch(messages))
}

/// The raw bytes whose compressed, base64'd body fills [`TARGET_FILL`] of the limit, at `ratio`.
fn predicted_raw(ratio: f64) -> usize {
    let compressed = (MAX_BODY_BYTES as f64 * TARGET_FILL) / 4.0 * 3.0 - HEADER as f64;
    let raw = compressed / ratio.max(1e-3);
    raw.min(MAX_PAYLOAD_BYTES as f64) as usize
}

/// Groups messages into batches of ≤ 10 entries and ≤ 1 MiB (bodies plus attribute reserve).
fn batch(messages: Vec<BufferMessage>) -> Vec<BufferBatch> {
    let mut batches: Vec<BufferBatch> = Vec::new();
    let mut current: BufferBatch = Vec::new();
    let mut bytes = 0;
    for m in messages {
        let size = m.body.len() + ATTRIBUTE_RESERVE_BYTES;
        if !current.is_empty()
            && (current.len() == SQS_MAX_BATCH_ENTRIES || bytes + size > SQS_MAX_BATCH_BYTES)
        {
            batches.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(m);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Reads a message body back into its records, in order. Anything malformed or of an unknown
/// format is a typed error, never a panic, and whatever the body, what is allocated is bounded by
/// its length: the payload by [`MAX_PAYLOAD_BYTES`] and by what its compressed bytes can hold
/// ([`max_decompressed`]), the records by what the payload holds.
pub fn unpack(body: &str) -> Result<Vec<ChangeRecord>, UnpackError> {
    let framed = B64
        .decode(body.trim())
        .map_err(|e| UnpackError::Base64(e.to_string()))?;
    if framed.len() < 4 || &framed[..3] != MAGIC {
        return Err(UnpackError::BadMagic);
    }
    let numbers = match framed[3] {
        FORMAT_VERSION => Numbers::Packed,
        FORMAT_V1_TEXT_NUMBERS => Numbers::Text,
        other => return Err(UnpackError::UnknownFormat(other)),
    };
    let raw = decompress(&framed[4..])?;
    let mut reader = Reader::with_numbers(&raw, numbers);
    let count = reader.varint()?;
    let mut records = Vec::with_capacity(reader.room(count, codec::MIN_RECORD_LEN));
    for _ in 0..count {
        records.push(reader.record()?);
    }
    reader.finish()?;
    Ok(records)
}

/// The payload of a frame's `size ‖ lz4 block`, exactly as long as the size says.
fn decompress(sized_block: &[u8]) -> Result<Vec<u8>, UnpackError> {
    let (size, block) = sized_block
        .split_first_chunk::<4>()
        .ok_or(UnpackError::Decompress("missing size".into()))?;
    let size = u32::from_le_bytes(*size) as usize;
    if size > MAX_PAYLOAD_BYTES {
        return Err(UnpackError::TooLarge(size));
    }
    if size > max_decompressed(block.len()) {
        return Err(UnpackError::Decompress(format!(
            "the size prefix says {size} bytes, which {} compressed bytes cannot hold",
            block.len()
        )));
    }
    let mut raw = vec![0; size];
    let n = lz4_flex::block::decompress_into(block, &mut raw)
        .map_err(|e| UnpackError::Decompress(e.to_string()))?;
    if n != size {
        return Err(UnpackError::Decompress(format!(
            "the payload is {n} bytes, its size prefix says {size}"
        )));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::{AttributeValue, Item};
    use crate::version::Version;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn record(i: usize, value: AttributeValue) -> ChangeRecord {
        let key: Item = [("pk".to_string(), AttributeValue::S(format!("k{i}")))].into();
        let mut image = key.clone();
        image.insert("v".into(), value);
        ChangeRecord {
            key,
            image,
            tombstone: false,
            version: Version::new(1_700_000_000_000 + i as u64, "r1"),
            source_region: "r1".into(),
            written_at_ms: 1_700_000_000_000 + i as u64,
        }
    }

    fn text(rng: &mut StdRng, n: usize) -> AttributeValue {
        const WORDS: &[&str] = &["ferry", "region", "table", "order", "paid", "the", "of"];
        let words: Vec<&str> = (0..n)
            .map(|_| WORDS[rng.gen_range(0..WORDS.len())])
            .collect();
        AttributeValue::S(words.join(" "))
    }

    fn noise(rng: &mut StdRng, n: usize) -> AttributeValue {
        AttributeValue::B((0..n).map(|_| rng.gen()).collect())
    }

    /// Every limit holds and unpacking gives back the records in order.
    fn check(records: &[ChangeRecord]) -> usize {
        let batches = pack(records).expect("packs");
        let mut back = Vec::new();
        let mut messages = 0;
        for b in &batches {
            assert!(!b.is_empty() && b.len() <= SQS_MAX_BATCH_ENTRIES);
            let bytes: usize = b
                .iter()
                .map(|m| m.body.len() + ATTRIBUTE_RESERVE_BYTES)
                .sum();
            assert!(bytes <= SQS_MAX_BATCH_BYTES, "batch of {bytes} bytes");
            for m in b {
                assert!(m.body.len() <= MAX_BODY_BYTES, "body of {}", m.body.len());
                let records = unpack(&m.body).expect("unpacks");
                assert_eq!(records.len(), m.records);
                back.extend(records);
                messages += 1;
            }
        }
        assert_eq!(back, records);
        messages
    }

    #[test]
    fn compressible_then_incompressible_still_fits() {
        // The ratio measured on the first records is far too optimistic for the later ones:
        // the oversized message is shrunk, never sent.
        let mut rng = StdRng::seed_from_u64(1);
        let mut records: Vec<ChangeRecord> =
            (0..3000).map(|i| record(i, text(&mut rng, 150))).collect();
        records.extend((3000..5000).map(|i| record(i, noise(&mut rng, 1000))));
        check(&records);
    }

    #[test]
    fn a_thousand_compressible_records_take_one_message() {
        let mut rng = StdRng::seed_from_u64(2);
        let records: Vec<ChangeRecord> =
            (0..1000).map(|i| record(i, text(&mut rng, 150))).collect();
        assert_eq!(check(&records), 1);
    }

    #[test]
    fn largest_items_fit_and_oversized_ones_are_named() {
        let mut rng = StdRng::seed_from_u64(3);
        let records: Vec<ChangeRecord> = (0..4)
            .map(|i| record(i, noise(&mut rng, 400 * 1024)))
            .collect();
        check(&records);
        let huge = record(7, noise(&mut rng, 1024 * 1024));
        let bytes = huge.encoded_len();
        let records = vec![records[0].clone(), huge];
        assert_eq!(
            pack(&records),
            Err(PackError::RecordTooLarge {
                key: "pk=S:k7".into(),
                bytes
            })
        );
    }

    #[test]
    fn empty_input_packs_to_nothing() {
        assert_eq!(pack(&[]), Ok(vec![]));
    }

    /// A format-1 message (numbers as text), made by `pack` before format 2 existed: a drain
    /// still reads what an older enqueue left in the buffer.
    const FORMAT_1_FIXTURE: &str = "RlJZAZkAAACQAoHQlf+8MQJyAwARggwA5AABAnBrAQItMAUCb2sDDQD/JAF\
        tBQEBbAYDAQIrNQABeAICAAEBbgEGMUUrMTI1Am5zCAMEMC4xMCctMTIzNDU2Nzg5MAoACVEDMWU1g28AcQJyMg\
        JyMoQMALABAQJwawEDMDA3AA==";

    fn fixture_records() -> Vec<ChangeRecord> {
        use AttributeValue as V;
        let key: Item = [("pk".to_string(), V::N("-0".into()))].into();
        let mut image = key.clone();
        image.insert("n".into(), V::N("1E+125".into()));
        image.insert(
            "ns".into(),
            V::Ns(vec![
                "0.10".into(),
                "-12345678901234567890123456789012345678".into(),
                "1e5".into(),
            ]),
        );
        let inner: Item = [(
            "l".to_string(),
            V::L(vec![V::N("+5".into()), V::S("x".into()), V::B(vec![0, 1])]),
        )]
        .into();
        image.insert("m".into(), V::M(inner));
        image.insert("ok".into(), V::Bool(true));
        vec![
            ChangeRecord {
                key,
                image,
                tombstone: false,
                version: Version::new(1_700_000_000_001, "r1"),
                source_region: "r1".into(),
                written_at_ms: 1_700_000_000_002,
            },
            ChangeRecord {
                key: [("pk".to_string(), V::N("007".into()))].into(),
                image: Item::new(),
                tombstone: true,
                version: Version::new(1_700_000_000_003, "r2"),
                source_region: "r2".into(),
                written_at_ms: 1_700_000_000_004,
            },
        ]
    }

    #[test]
    fn a_format_1_message_still_unpacks() {
        let frame = B64.decode(FORMAT_1_FIXTURE).expect("base64");
        assert_eq!(frame[3], FORMAT_V1_TEXT_NUMBERS);
        assert_eq!(unpack(FORMAT_1_FIXTURE), Ok(fixture_records()));
    }

    #[test]
    fn pack_writes_format_2_with_packed_numbers() {
        let records = fixture_records();
        let batches = pack(&records).expect("packs");
        let body = &batches[0][0].body;
        let frame = B64.decode(body).expect("base64");
        assert_eq!(frame[3], FORMAT_VERSION);
        assert_eq!(FORMAT_VERSION, 2);
        assert_eq!(unpack(body), Ok(records.clone()));
        // The same records, smaller than as text.
        let v1 = B64.decode(FORMAT_1_FIXTURE).expect("base64");
        let size = |f: &[u8]| u32::from_le_bytes([f[4], f[5], f[6], f[7]]);
        assert!(
            size(&frame) < size(&v1),
            "{} vs {}",
            size(&frame),
            size(&v1)
        );
        // Read with the wrong number encoding, a format-2 payload is not taken for format 1.
        let raw = lz4_flex::block::decompress_size_prepended(&frame[4..]).expect("lz4");
        let mut r = Reader::with_numbers(&raw, Numbers::Text);
        let wrong = r.varint().and_then(|_| r.record());
        assert_ne!(wrong.ok().as_ref(), Some(&records[0]));
    }
}
