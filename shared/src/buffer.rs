//! Buffer messages: many change records packed into one SQS message, compressed.
//!
//! A message body is `base64("FRY" ‖ format ‖ lz4(count ‖ records…))` (the records in
//! [`crate::codec`]'s encoding, the lz4 block prefixed with its uncompressed size). SQS bodies must
//! be text, hence base64. The format byte lets a drain reject what it does not understand.

use crate::codec::{self, DecodeError, Reader};
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
/// Decompressed payloads above this are refused (a corrupt size prefix must not allocate GBs).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;

pub const FORMAT_VERSION: u8 = 1;
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
    #[error("unknown buffer format version {0} (this drain reads {FORMAT_VERSION})")]
    UnknownFormat(u8),
    #[error("payload of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("payload does not decompress: {0}")]
    Decompress(String),
    #[error("payload is malformed: {0}")]
    Decode(#[from] DecodeError),
}

/// The largest raw payload whose worst-case compressed, base64'd body still fits.
fn worst_case_raw_budget() -> usize {
    let compressed_budget = MAX_BODY_BYTES / 4 * 3 - MAGIC.len() - 1 - 4;
    // lz4's worst case is the input plus 1/255 of it plus a small constant.
    (compressed_budget - 16) * 255 / 256
}

fn encode_body(payload: &[u8]) -> String {
    let compressed = lz4_flex::block::compress_prepend_size(payload);
    let mut framed = Vec::with_capacity(compressed.len() + 4);
    framed.extend_from_slice(MAGIC);
    framed.push(FORMAT_VERSION);
    framed.extend_from_slice(&compressed);
    B64.encode(framed)
}

/// Packs records into as few messages as the limits allow, in order, and groups the messages
/// into `SendMessageBatch` calls (≤ 10 entries, ≤ 1 MiB in all). A record that cannot fit any
/// message is an error naming its key; nothing is dropped silently.
pub fn pack(records: &[ChangeRecord]) -> Result<Vec<BufferBatch>, PackError> {
    let encoded: Vec<Vec<u8>> = records
        .iter()
        .map(|r| {
            let mut out = Vec::with_capacity(1024);
            codec::put_record(&mut out, r);
            out
        })
        .collect();
    let safe = worst_case_raw_budget();
    let mut messages = Vec::new();
    let mut start = 0;
    while start < encoded.len() {
        // Fill up to the worst-case budget (always fits), then let the real compression ratio
        // decide how much more fits, re-compressing at most a few times.
        let mut budget = safe;
        let mut best: Option<(usize, String)> = None;
        for _ in 0..4 {
            let end = take_until(&encoded, start, budget);
            let raw: usize = encoded[start..end].iter().map(Vec::len).sum();
            let body = encode_body(&payload(&encoded[start..end]));
            let len = body.len();
            if len <= MAX_BODY_BYTES {
                best = Some((end, body));
                if end == encoded.len() || len * 10 >= MAX_BODY_BYTES * 9 {
                    break;
                }
                // Grow towards 95 % of the limit at the ratio just measured.
                let next = (raw as f64 * (MAX_BODY_BYTES as f64 * 0.95) / len as f64) as usize;
                if next <= budget {
                    break;
                }
                budget = next;
            } else if best.is_some() {
                break;
            } else if end - start == 1 {
                return Err(PackError::RecordTooLarge {
                    key: describe_key(&records[start].key),
                    bytes: encoded[start].len(),
                });
            } else {
                budget = (raw as f64 * (MAX_BODY_BYTES as f64 * 0.9) / len as f64) as usize;
            }
        }
        match best {
            Some((end, body)) => {
                messages.push(BufferMessage {
                    body,
                    records: end - start,
                });
                start = end;
            }
            None => {
                // Even the first record alone is over (only reachable for one huge record).
                return Err(PackError::RecordTooLarge {
                    key: describe_key(&records[start].key),
                    bytes: encoded[start].len(),
                });
            }
        }
    }
    Ok(batch(messages))
}

/// The end index of the longest run from `start` whose raw size stays within `budget` (at
/// least one record).
fn take_until(encoded: &[Vec<u8>], start: usize, budget: usize) -> usize {
    let mut size = 0;
    let mut end = start;
    while end < encoded.len() {
        let next = size + encoded[end].len();
        if next > budget && end > start {
            break;
        }
        size = next;
        end += 1;
    }
    end
}

fn payload(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.iter().map(Vec::len).sum::<usize>() + 5);
    codec::put_varint(&mut out, records.len() as u64);
    for r in records {
        out.extend_from_slice(r);
    }
    out
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
/// format is a typed error, never a panic.
pub fn unpack(body: &str) -> Result<Vec<ChangeRecord>, UnpackError> {
    let framed = B64
        .decode(body.trim())
        .map_err(|e| UnpackError::Base64(e.to_string()))?;
    if framed.len() < 4 || &framed[..3] != MAGIC {
        return Err(UnpackError::BadMagic);
    }
    if framed[3] != FORMAT_VERSION {
        return Err(UnpackError::UnknownFormat(framed[3]));
    }
    let compressed = &framed[4..];
    let size = compressed
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or(UnpackError::Decompress("missing size".into()))?;
    if size > MAX_PAYLOAD_BYTES {
        return Err(UnpackError::TooLarge(size));
    }
    let raw = lz4_flex::block::decompress_size_prepended(compressed)
        .map_err(|e| UnpackError::Decompress(e.to_string()))?;
    let mut reader = Reader::new(&raw);
    let count = reader.varint()?;
    let mut records = Vec::with_capacity(count.min(100_000) as usize);
    for _ in 0..count {
        records.push(reader.record()?);
    }
    reader.finish()?;
    Ok(records)
}
