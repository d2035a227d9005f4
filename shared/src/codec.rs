//! Ferry's binary encoding of items and change records: the inside of a buffer message.
//!
//! Why not JSON: DynamoDB JSON base64s binaries and escapes control characters (up to 6×), so a
//! 400 KB item could not be guaranteed to fit a 1 MiB SQS message. This encoding costs at most the
//! item's own bytes plus a few bytes per value, so the largest item always fits, and it is several
//! times faster to write and read. Every DynamoDB type round-trips exactly: numbers stay the
//! strings DynamoDB sent, binaries stay bytes, sets keep their order.

use crate::item::{AttributeValue, Item};
use crate::record::ChangeRecord;
use crate::version::Version;

/// DynamoDB nests documents at most 32 levels deep; anything deeper is malformed.
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated at byte {0}")]
    Truncated(usize),
    #[error("unknown attribute type tag {tag} at byte {at}")]
    UnknownTag { tag: u8, at: usize },
    #[error("invalid UTF-8 string at byte {0}")]
    Utf8(usize),
    #[error("length {len} at byte {at} exceeds the remaining input")]
    Length { len: u64, at: usize },
    #[error("nesting deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

const S: u8 = 0;
const N: u8 = 1;
const B: u8 = 2;
const BOOL: u8 = 3;
const NULL: u8 = 4;
const M: u8 = 5;
const L: u8 = 6;
const SS: u8 = 7;
const NS: u8 = 8;
const BS: u8 = 9;

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

pub fn put_value(out: &mut Vec<u8>, v: &AttributeValue) {
    match v {
        AttributeValue::S(s) => {
            out.push(S);
            put_str(out, s);
        }
        AttributeValue::N(n) => {
            out.push(N);
            put_str(out, n);
        }
        AttributeValue::B(b) => {
            out.push(B);
            put_bytes(out, b);
        }
        AttributeValue::Bool(b) => {
            out.push(BOOL);
            out.push(*b as u8);
        }
        AttributeValue::Null(b) => {
            out.push(NULL);
            out.push(*b as u8);
        }
        AttributeValue::M(m) => {
            out.push(M);
            put_item(out, m);
        }
        AttributeValue::L(l) => {
            out.push(L);
            put_varint(out, l.len() as u64);
            for v in l {
                put_value(out, v);
            }
        }
        AttributeValue::Ss(ss) => {
            out.push(SS);
            put_varint(out, ss.len() as u64);
            for s in ss {
                put_str(out, s);
            }
        }
        AttributeValue::Ns(ns) => {
            out.push(NS);
            put_varint(out, ns.len() as u64);
            for s in ns {
                put_str(out, s);
            }
        }
        AttributeValue::Bs(bs) => {
            out.push(BS);
            put_varint(out, bs.len() as u64);
            for b in bs {
                put_bytes(out, b);
            }
        }
    }
}

pub fn put_item(out: &mut Vec<u8>, item: &Item) {
    put_varint(out, item.len() as u64);
    for (name, value) in item {
        put_str(out, name);
        put_value(out, value);
    }
}

pub fn put_record(out: &mut Vec<u8>, r: &ChangeRecord) {
    put_varint(out, r.version.ts_ms);
    put_str(out, &r.version.origin);
    put_str(out, &r.source_region);
    put_varint(out, r.written_at_ms);
    out.push(r.tombstone as u8);
    put_item(out, &r.key);
    put_item(out, &r.image);
}

/// A cursor over encoded bytes; every read checks bounds.
pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.at >= self.buf.len()
    }

    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.buf.len() - self.at {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self
            .buf
            .get(self.at)
            .ok_or(DecodeError::Truncated(self.at))?;
        self.at += 1;
        Ok(b)
    }

    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(DecodeError::Length {
            len: u64::MAX,
            at: self.at,
        })
    }

    /// A count of things each at least one byte long: it cannot exceed what is left.
    fn count(&mut self) -> Result<usize, DecodeError> {
        let at = self.at;
        let n = self.varint()?;
        if n > (self.buf.len() - self.at) as u64 {
            return Err(DecodeError::Length { len: n, at });
        }
        Ok(n as usize)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.count()?;
        let b = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(b)
    }

    pub fn string(&mut self) -> Result<String, DecodeError> {
        let at = self.at;
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Utf8(at))
    }

    pub fn value(&mut self, depth: usize) -> Result<AttributeValue, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let at = self.at;
        Ok(match self.byte()? {
            S => AttributeValue::S(self.string()?),
            N => AttributeValue::N(self.string()?),
            B => AttributeValue::B(self.bytes()?.to_vec()),
            BOOL => AttributeValue::Bool(self.byte()? != 0),
            NULL => AttributeValue::Null(self.byte()? != 0),
            M => AttributeValue::M(self.item(depth + 1)?),
            L => {
                let n = self.count()?;
                let mut l = Vec::with_capacity(n);
                for _ in 0..n {
                    l.push(self.value(depth + 1)?);
                }
                AttributeValue::L(l)
            }
            SS => AttributeValue::Ss(self.strings()?),
            NS => AttributeValue::Ns(self.strings()?),
            BS => {
                let n = self.count()?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.bytes()?.to_vec());
                }
                AttributeValue::Bs(v)
            }
            tag => return Err(DecodeError::UnknownTag { tag, at }),
        })
    }

    fn strings(&mut self) -> Result<Vec<String>, DecodeError> {
        let n = self.count()?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.string()?);
        }
        Ok(v)
    }

    pub fn item(&mut self, depth: usize) -> Result<Item, DecodeError> {
        let n = self.count()?;
        let mut item = Item::with_capacity(n);
        for _ in 0..n {
            let name = self.string()?;
            let value = self.value(depth)?;
            item.insert(name, value);
        }
        Ok(item)
    }

    pub fn record(&mut self) -> Result<ChangeRecord, DecodeError> {
        let ts_ms = self.varint()?;
        let origin = self.string()?;
        let source_region = self.string()?;
        let written_at_ms = self.varint()?;
        let tombstone = self.byte()? != 0;
        let key = self.item(0)?;
        let image = self.item(0)?;
        Ok(ChangeRecord {
            key,
            image,
            tombstone,
            version: Version { ts_ms, origin },
            source_region,
            written_at_ms,
        })
    }
}

/// Encodes one item on its own (for tests and tools).
pub fn encode_item(item: &Item) -> Vec<u8> {
    let mut out = Vec::new();
    put_item(&mut out, item);
    out
}

/// Decodes what [`encode_item`] wrote.
pub fn decode_item(bytes: &[u8]) -> Result<Item, DecodeError> {
    let mut r = Reader::new(bytes);
    let item = r.item(0)?;
    r.finish()?;
    Ok(item)
}
