//! The low-level peer encoding: a small tag-length-value format in the style of protocol
//! buffers, written by hand so that every length read from a peer is checked.
//!
//! A message is a sequence of fields. Each field starts with a varint key `tag << 3 | kind`,
//! where kind 0 is a varint, 1 is 8 little-endian bytes and 2 is a varint length followed by
//! that many bytes (strings, blobs, nested messages). Decoders skip fields whose tag they do
//! not know, so a later version can add fields without breaking running nodes; a field that
//! changes meaning gets a new tag instead.
//!
//! Nothing here allocates more than the input it was given: lengths are checked against the
//! bytes that remain before anything is sliced.

use std::fmt;

/// Why a peer's bytes were rejected. Never fatal: the message is dropped and counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended inside a field.
    Truncated,
    /// A varint longer than 10 bytes or overflowing 64 bits.
    BadVarint,
    /// A field kind this format does not define.
    BadKind(u8),
    /// A length or count above the limit for that field.
    TooLarge(&'static str),
    /// A field holds a value outside its domain (bad UTF-8, wrong size…).
    Invalid(&'static str),
    /// A field every version of the message has was missing.
    Missing(&'static str),
    /// The first byte names a format version this node does not speak.
    Version(u8),
    /// The message belongs to another cluster.
    WrongCluster { ours: u16, theirs: u16 },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => write!(f, "truncated message"),
            DecodeError::BadVarint => write!(f, "malformed varint"),
            DecodeError::BadKind(k) => write!(f, "unknown field kind {k}"),
            DecodeError::TooLarge(what) => write!(f, "{what} exceeds its limit"),
            DecodeError::Invalid(what) => write!(f, "invalid {what}"),
            DecodeError::Missing(what) => write!(f, "missing {what}"),
            DecodeError::Version(v) => write!(f, "unsupported format version {v}"),
            DecodeError::WrongCluster { ours, theirs } => {
                write!(
                    f,
                    "message for cluster {theirs}, this node is in cluster {ours}"
                )
            }
        }
    }
}

impl std::error::Error for DecodeError {}

pub type DResult<T> = Result<T, DecodeError>;

const KIND_VARINT: u8 = 0;
const KIND_FIXED64: u8 = 1;
const KIND_BYTES: u8 = 2;

/// Appends a message's fields to a byte buffer.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Bytes a varint of `v` takes.
pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    fn key(&mut self, tag: u32, kind: u8) {
        put_varint(&mut self.buf, (u64::from(tag) << 3) | u64::from(kind));
    }

    pub fn u64(&mut self, tag: u32, v: u64) -> &mut Self {
        self.key(tag, KIND_VARINT);
        put_varint(&mut self.buf, v);
        self
    }

    pub fn i64(&mut self, tag: u32, v: i64) -> &mut Self {
        self.u64(tag, zigzag(v))
    }

    pub fn f64(&mut self, tag: u32, v: f64) -> &mut Self {
        self.key(tag, KIND_FIXED64);
        self.buf.extend_from_slice(&v.to_bits().to_le_bytes());
        self
    }

    pub fn bytes(&mut self, tag: u32, b: &[u8]) -> &mut Self {
        self.key(tag, KIND_BYTES);
        put_varint(&mut self.buf, b.len() as u64);
        self.buf.extend_from_slice(b);
        self
    }

    pub fn str(&mut self, tag: u32, s: &str) -> &mut Self {
        self.bytes(tag, s.as_bytes())
    }

    /// A nested message written by `f`.
    pub fn msg(&mut self, tag: u32, f: impl FnOnce(&mut Writer)) -> &mut Self {
        self.msg_in(tag, &mut Writer::new(), f)
    }

    /// A nested message written by `f` into `scratch` (cleared first): for many nested
    /// messages in a row without a buffer each.
    pub fn msg_in(
        &mut self,
        tag: u32,
        scratch: &mut Writer,
        f: impl FnOnce(&mut Writer),
    ) -> &mut Self {
        scratch.buf.clear();
        f(scratch);
        self.bytes(tag, &scratch.buf)
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// One decoded field value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
}

impl<'a> Field<'a> {
    pub fn u64(self, what: &'static str) -> DResult<u64> {
        match self {
            Field::Varint(v) => Ok(v),
            _ => Err(DecodeError::Invalid(what)),
        }
    }

    pub fn i64(self, what: &'static str) -> DResult<i64> {
        self.u64(what).map(unzigzag)
    }

    pub fn u32(self, what: &'static str) -> DResult<u32> {
        u32::try_from(self.u64(what)?).map_err(|_| DecodeError::Invalid(what))
    }

    pub fn u16(self, what: &'static str) -> DResult<u16> {
        u16::try_from(self.u64(what)?).map_err(|_| DecodeError::Invalid(what))
    }

    pub fn f64(self, what: &'static str) -> DResult<f64> {
        match self {
            Field::Fixed64(v) => Ok(f64::from_bits(v)),
            _ => Err(DecodeError::Invalid(what)),
        }
    }

    pub fn bytes(self, what: &'static str) -> DResult<&'a [u8]> {
        match self {
            Field::Bytes(b) => Ok(b),
            _ => Err(DecodeError::Invalid(what)),
        }
    }

    /// Bytes no longer than `max`.
    pub fn bytes_max(self, what: &'static str, max: usize) -> DResult<&'a [u8]> {
        let b = self.bytes(what)?;
        if b.len() > max {
            return Err(DecodeError::TooLarge(what));
        }
        Ok(b)
    }

    pub fn str(self, what: &'static str, max: usize) -> DResult<&'a str> {
        std::str::from_utf8(self.bytes_max(what, max)?).map_err(|_| DecodeError::Invalid(what))
    }

    pub fn reader(self, what: &'static str) -> DResult<Reader<'a>> {
        Ok(Reader::new(self.bytes(what)?))
    }
}

/// Iterates over the fields of one message.
pub struct Reader<'a> {
    buf: &'a [u8],
}

pub fn get_varint(buf: &mut &[u8]) -> DResult<u64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let (&b, rest) = buf.split_first().ok_or(DecodeError::Truncated)?;
        *buf = rest;
        if i == 9 && b > 1 {
            return Err(DecodeError::BadVarint);
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DecodeError::BadVarint)
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    /// The next field as (tag, value), or `None` at the end of the message.
    pub fn next_field(&mut self) -> DResult<Option<(u32, Field<'a>)>> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = get_varint(&mut self.buf)?;
        let tag = u32::try_from(key >> 3).map_err(|_| DecodeError::Invalid("field tag"))?;
        let value = match (key & 7) as u8 {
            KIND_VARINT => Field::Varint(get_varint(&mut self.buf)?),
            KIND_FIXED64 => {
                if self.buf.len() < 8 {
                    return Err(DecodeError::Truncated);
                }
                let (b, rest) = self.buf.split_at(8);
                self.buf = rest;
                Field::Fixed64(u64::from_le_bytes(b.try_into().expect("8 bytes")))
            }
            KIND_BYTES => {
                let len = get_varint(&mut self.buf)?;
                if len > self.buf.len() as u64 {
                    return Err(DecodeError::Truncated);
                }
                let (b, rest) = self.buf.split_at(len as usize);
                self.buf = rest;
                Field::Bytes(b)
            }
            k => return Err(DecodeError::BadKind(k)),
        };
        Ok(Some((tag, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_unknown_ones_are_skipped() {
        let mut w = Writer::new();
        w.u64(1, 300)
            .i64(2, -5)
            .f64(3, 1.5)
            .str(4, "héllo")
            .u64(99, 7)
            .msg(5, |m| {
                m.u64(1, u64::MAX);
            });
        let buf = w.finish();
        let mut r = Reader::new(&buf);
        let mut seen = vec![];
        while let Some((tag, f)) = r.next_field().unwrap() {
            match tag {
                1 => assert_eq!(f.u64("a").unwrap(), 300),
                2 => assert_eq!(f.i64("b").unwrap(), -5),
                3 => assert_eq!(f.f64("c").unwrap(), 1.5),
                4 => assert_eq!(f.str("d", 100).unwrap(), "héllo"),
                5 => {
                    let mut inner = f.reader("e").unwrap();
                    let (t, v) = inner.next_field().unwrap().unwrap();
                    assert_eq!((t, v.u64("x").unwrap()), (1, u64::MAX));
                }
                _ => {}
            }
            seen.push(tag);
        }
        assert_eq!(seen, vec![1, 2, 3, 4, 99, 5]);
    }

    #[test]
    fn hostile_lengths_are_rejected_without_allocation() {
        // A bytes field claiming 2^60 bytes.
        let mut buf = vec![(4 << 3) | 2];
        put_varint(&mut buf, 1 << 60);
        assert_eq!(Reader::new(&buf).next_field(), Err(DecodeError::Truncated));
        // An over-long varint.
        let buf = [0xffu8; 11];
        assert_eq!(Reader::new(&buf).next_field(), Err(DecodeError::BadVarint));
        // An undefined kind.
        assert_eq!(Reader::new(&[7]).next_field(), Err(DecodeError::BadKind(7)));
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(127), 1);
        assert_eq!(varint_len(128), 2);
        assert_eq!(varint_len(u64::MAX), 10);
    }

    #[test]
    fn zigzag_round_trips_extremes() {
        for v in [0, 1, -1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }
}
