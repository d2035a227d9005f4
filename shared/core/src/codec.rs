//! Ferry's binary encoding of items and change records: the inside of a buffer message.
//!
//! Why not JSON: DynamoDB JSON base64s binaries and escapes control characters (up to 6×), so a
//! 400 KB item could not be guaranteed to fit a 1 MiB SQS message. This encoding costs at most the
//! item's own bytes plus a few bytes per value, so the largest item always fits, and it is several
//! times faster to write and read. Every DynamoDB type round-trips exactly: numbers stay the
//! strings DynamoDB sent, binaries stay bytes, sets keep their order.
//!
//! Numbers (`N` and the members of `NS`, at any depth) are written packed, one character per
//! 4-bit nibble ([`Numbers::Packed`], buffer format 2): DynamoDB counts a number at about one
//! byte per two significant digits, so as text a number set of random 38-digit numbers took
//! twice its DynamoDB size and a 400 KB item could not fit a message. The exact string is kept
//! (never parsed), so `1E+125`, `-0` and `0.10` come back as sent. Buffer format 1 wrote numbers
//! as plain strings ([`Numbers::Text`]); [`Reader::with_numbers`] still reads it.

use crate::item::{AttributeValue, Item};
use crate::record::ChangeRecord;
use crate::version::Version;

/// DynamoDB nests documents at most 32 levels deep; anything deeper is malformed.
pub const MAX_DEPTH: usize = 32;

/// The most entries a decoder reserves room for from a count it has read. The count is only the
/// input's claim: past this, room grows with what is actually decoded, so a lying count costs
/// next to nothing, even repeated at every level of nesting, and a true one a few reallocations.
pub const MAX_RESERVE: usize = 256;

/// The fewest bytes a change record takes ([`put_record`]: two varints, two strings, the
/// tombstone byte, two item counts).
pub const MIN_RECORD_LEN: usize = 7;
/// The fewest bytes a value takes: its tag and one byte (a length, a count, a boolean).
const MIN_VALUE_LEN: usize = 2;
/// The fewest bytes a map entry takes: its name's length and a value.
const MIN_ENTRY_LEN: usize = 1 + MIN_VALUE_LEN;
/// The fewest bytes a member of a string, number or binary set takes: its length.
const MIN_MEMBER_LEN: usize = 1;

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
    #[error("malformed packed number at byte {0}")]
    Number(usize),
}

/// How numbers are encoded in a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numbers {
    /// As their string, like `S` (buffer format 1; read only).
    Text,
    /// As `varint(len << 1 | packed)`: with the low bit set, `len` characters of
    /// [`NUMBER_ALPHABET`] two to a byte (high nibble first, an odd count padded with `0xF`);
    /// with it clear, `len` bytes of UTF-8, for a string with a character outside the alphabet
    /// (DynamoDB sends none, but any string round-trips). What [`put_value`] writes.
    Packed,
}

/// The characters a packed number is made of; a character's index is its nibble (`0xF` pads).
pub const NUMBER_ALPHABET: &[u8; 15] = b"0123456789-.+Ee";
const PAD: u8 = 0xF;
/// `NIBBLE[c]`: the nibble of character `c`, or `0xFF` for a character outside the alphabet.
const NIBBLE: [u8; 256] = {
    let mut t = [0xFFu8; 256];
    let mut i = 0;
    while i < NUMBER_ALPHABET.len() {
        t[NUMBER_ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
};

fn packable(s: &[u8]) -> bool {
    s.iter().all(|&c| NIBBLE[c as usize] != 0xFF)
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

/// A number in the [`Numbers::Packed`] encoding.
pub fn put_number(out: &mut Vec<u8>, n: &str) {
    let s = n.as_bytes();
    if !packable(s) {
        put_varint(out, (s.len() as u64) << 1);
        out.extend_from_slice(s);
        return;
    }
    put_varint(out, ((s.len() as u64) << 1) | 1);
    let mut pairs = s.chunks_exact(2);
    out.reserve(s.len().div_ceil(2));
    for p in &mut pairs {
        out.push(NIBBLE[p[0] as usize] << 4 | NIBBLE[p[1] as usize]);
    }
    if let [last] = pairs.remainder() {
        out.push(NIBBLE[*last as usize] << 4 | PAD);
    }
}

pub fn put_value(out: &mut Vec<u8>, v: &AttributeValue) {
    match v {
        AttributeValue::S(s) => {
            out.push(S);
            put_str(out, s);
        }
        AttributeValue::N(n) => {
            out.push(N);
            put_number(out, n);
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
        AttributeValue::L(l) => put_seq(out, L, l, put_value),
        AttributeValue::Ss(ss) => put_seq(out, SS, ss, |out, s| put_str(out, s)),
        AttributeValue::Ns(ns) => put_seq(out, NS, ns, |out, n| put_number(out, n)),
        AttributeValue::Bs(bs) => put_seq(out, BS, bs, |out, b| put_bytes(out, b)),
    }
}

/// A list or set: its tag, its length, then each member as `put` writes it.
fn put_seq<T>(out: &mut Vec<u8>, tag: u8, members: &[T], put: impl Fn(&mut Vec<u8>, &T)) {
    out.push(tag);
    put_varint(out, members.len() as u64);
    for member in members {
        put(out, member);
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
    numbers: Numbers,
}

impl<'a> Reader<'a> {
    /// A reader of what this codec writes (numbers [`Numbers::Packed`]).
    pub fn new(buf: &'a [u8]) -> Self {
        Self::with_numbers(buf, Numbers::Packed)
    }

    /// A reader of a payload whose numbers are encoded as `numbers` says.
    pub fn with_numbers(buf: &'a [u8], numbers: Numbers) -> Self {
        Reader {
            buf,
            at: 0,
            numbers,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.at >= self.buf.len()
    }

    /// How much room to reserve for `count` entries of at least `min_len` bytes each, which the
    /// input claims follow: no more than the rest of the input can hold, nor [`MAX_RESERVE`].
    pub fn room(&self, count: u64, min_len: usize) -> usize {
        let fit = (self.buf.len() - self.at) / min_len.max(1);
        count.min(fit.min(MAX_RESERVE) as u64) as usize
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

    /// A number, in the encoding this reader was made for. Only the encoding [`put_number`]
    /// writes is accepted (padding `0xF`, text only for what cannot be packed), so every
    /// accepted number re-encodes to the same bytes.
    pub fn number(&mut self) -> Result<String, DecodeError> {
        if self.numbers == Numbers::Text {
            return self.string();
        }
        let at = self.at;
        let v = self.varint()?;
        let len = v >> 1;
        if v & 1 == 0 {
            let n = usize::try_from(len)
                .ok()
                .filter(|&n| n <= self.buf.len() - self.at)
                .ok_or(DecodeError::Length { len, at })?;
            let b = &self.buf[self.at..self.at + n];
            if packable(b) {
                return Err(DecodeError::Number(at));
            }
            let s = std::str::from_utf8(b).map_err(|_| DecodeError::Utf8(at))?;
            self.at += n;
            return Ok(s.to_owned());
        }
        let bytes = len.div_ceil(2);
        let n = usize::try_from(bytes)
            .ok()
            .filter(|&n| n <= self.buf.len() - self.at)
            .ok_or(DecodeError::Length { len: bytes, at })?;
        let packed = &self.buf[self.at..self.at + n];
        // An odd count ends with a padded byte; padding anywhere else is malformed.
        let (full, last) = if len % 2 == 1 {
            (&packed[..n - 1], packed.last().copied())
        } else {
            (packed, None)
        };
        let mut s = String::with_capacity(n * 2);
        for &b in full {
            let (hi, lo) = (b >> 4, b & 0xF);
            if hi == PAD || lo == PAD {
                return Err(DecodeError::Number(at));
            }
            s.push(char::from(NUMBER_ALPHABET[hi as usize]));
            s.push(char::from(NUMBER_ALPHABET[lo as usize]));
        }
        if let Some(b) = last {
            if b >> 4 == PAD || b & 0xF != PAD {
                return Err(DecodeError::Number(at));
            }
            s.push(char::from(NUMBER_ALPHABET[(b >> 4) as usize]));
        }
        self.at += n;
        Ok(s)
    }

    pub fn value(&mut self, depth: usize) -> Result<AttributeValue, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let at = self.at;
        Ok(match self.byte()? {
            S => AttributeValue::S(self.string()?),
            N => AttributeValue::N(self.number()?),
            B => AttributeValue::B(self.bytes()?.to_vec()),
            BOOL => AttributeValue::Bool(self.byte()? != 0),
            NULL => AttributeValue::Null(self.byte()? != 0),
            M => AttributeValue::M(self.item(depth + 1)?),
            L => {
                let n = self.count()?;
                let mut l = Vec::with_capacity(self.room(n as u64, MIN_VALUE_LEN));
                for _ in 0..n {
                    l.push(self.value(depth + 1)?);
                }
                AttributeValue::L(l)
            }
            SS => AttributeValue::Ss(self.strings()?),
            NS => {
                let n = self.count()?;
                let mut v = Vec::with_capacity(self.room(n as u64, MIN_MEMBER_LEN));
                for _ in 0..n {
                    v.push(self.number()?);
                }
                AttributeValue::Ns(v)
            }
            BS => {
                let n = self.count()?;
                let mut v = Vec::with_capacity(self.room(n as u64, MIN_MEMBER_LEN));
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
        let mut v = Vec::with_capacity(self.room(n as u64, MIN_MEMBER_LEN));
        for _ in 0..n {
            v.push(self.string()?);
        }
        Ok(v)
    }

    pub fn item(&mut self, depth: usize) -> Result<Item, DecodeError> {
        let n = self.count()?;
        let mut item = Item::with_capacity(self.room(n as u64, MIN_ENTRY_LEN));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn number_back(bytes: &[u8]) -> Result<String, DecodeError> {
        let mut r = Reader::new(bytes);
        let n = r.number()?;
        r.finish()?;
        Ok(n)
    }

    #[test]
    fn numbers_round_trip_exactly_in_half_their_length() {
        for n in [
            "",
            "0",
            "-0",
            "0.10",
            "1E+125",
            "-1E-130",
            "1e5",
            "+5",
            "007",
            "100e-2",
            "-12345678901234567890123456789012345678",
            "9.9999999999999999999999999999999999999E+125",
        ] {
            let mut out = Vec::new();
            put_number(&mut out, n);
            assert_eq!(out.len(), 1 + n.len().div_ceil(2), "{n}");
            assert_eq!(number_back(&out).as_deref(), Ok(n));
        }
    }

    #[test]
    fn a_string_outside_the_alphabet_is_kept_as_text() {
        for n in [" 1", "NaN", "1_000", "١٢", "0x1F"] {
            let mut out = Vec::new();
            put_number(&mut out, n);
            assert_eq!(out.len(), 1 + n.len(), "{n}");
            assert_eq!(number_back(&out).as_deref(), Ok(n));
        }
    }

    #[test]
    fn non_canonical_packed_numbers_are_refused() {
        // "12" as text although it packs.
        assert_eq!(number_back(&[4, b'1', b'2']), Err(DecodeError::Number(0)));
        // Three characters with the padding in the first byte.
        assert_eq!(number_back(&[7, 0x1F, 0x23]), Err(DecodeError::Number(0)));
        // An odd count whose last byte is not padded, or is all padding.
        assert_eq!(number_back(&[3, 0x12]), Err(DecodeError::Number(0)));
        assert_eq!(number_back(&[3, 0xFF]), Err(DecodeError::Number(0)));
        // An even count with padding.
        assert_eq!(number_back(&[9, 0x12, 0x3F]), Err(DecodeError::Number(0)));
        // Cut short, and a text number that is not UTF-8.
        assert_eq!(
            number_back(&[9, 0x12]),
            Err(DecodeError::Length { len: 2, at: 0 })
        );
        assert_eq!(number_back(&[4, 0xff, 0xfe]), Err(DecodeError::Utf8(0)));
    }

    #[test]
    fn numbers_at_any_depth_are_packed() {
        let n = "-12345678901234567890123456789012345678";
        let inner: Item = [(
            "l".to_string(),
            AttributeValue::L(vec![AttributeValue::Ns(vec![n.into(), "1E+125".into()])]),
        )]
        .into();
        let item: Item = [
            ("m".to_string(), AttributeValue::M(inner)),
            ("n".to_string(), AttributeValue::N(n.into())),
        ]
        .into();
        let bytes = encode_item(&item);
        assert!(bytes.len() < 2 * n.len() + 20, "{} bytes", bytes.len());
        assert_eq!(decode_item(&bytes), Ok(item.clone()));
        // The same bytes read as format 1 (numbers as text) do not come back as the item.
        let mut r = Reader::with_numbers(&bytes, Numbers::Text);
        assert_ne!(r.item(0).ok(), Some(item));
    }
}
