//! Packed primary keys: the byte format cr-sqlite's `crsql_pack_columns` produces, which
//! Corrosion uses on the wire and in `/v1/updates`. Layout: `[n: u8]`, then per column a
//! header byte `(len_bytes << 3) | type` (1 INTEGER, 2 REAL, 3 TEXT, 4 BLOB, 5 NULL) and:
//! INTEGER → `len_bytes` big-endian bytes of the i64 (minimal width, 0 for zero);
//! REAL → 8 big-endian bytes; TEXT/BLOB → the length in `len_bytes` big-endian bytes, then
//! the bytes; NULL → nothing.

use rusqlite::types::{Value, ValueRef};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UnpackError {
    #[error("packed key is truncated")]
    Truncated,
    #[error("packed key has unknown column type {0}")]
    BadType(u8),
    #[error("packed key has an invalid length field")]
    BadLength,
    #[error("packed key text is not UTF-8")]
    BadUtf8,
    #[error("packed key has {0} trailing bytes")]
    Trailing(usize),
}

fn min_be_len(v: u64) -> usize {
    (8 - (v.leading_zeros() / 8) as usize).min(8)
}

fn push_be(out: &mut Vec<u8>, v: u64, len: usize) {
    out.extend_from_slice(&v.to_be_bytes()[8 - len..]);
}

/// Appends one packed column to `out`.
pub fn pack_value(out: &mut Vec<u8>, v: ValueRef<'_>) {
    match v {
        ValueRef::Null => out.push(5),
        ValueRef::Integer(i) => {
            let len = min_be_len(i as u64);
            out.push(((len as u8) << 3) | 1);
            push_be(out, i as u64, len);
        }
        ValueRef::Real(f) => {
            out.push(2);
            out.extend_from_slice(&f.to_be_bytes());
        }
        ValueRef::Text(b) | ValueRef::Blob(b) => {
            let ty = if matches!(v, ValueRef::Text(_)) { 3 } else { 4 };
            let len = min_be_len(b.len() as u64);
            out.push(((len as u8) << 3) | ty);
            push_be(out, b.len() as u64, len);
            out.extend_from_slice(b);
        }
    }
}

/// Packs a whole key (at most 255 columns, which SQLite's own limits guarantee for keys).
pub fn pack<'a>(values: impl ExactSizeIterator<Item = ValueRef<'a>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + values.len() * 9);
    out.push(values.len() as u8);
    for v in values {
        pack_value(&mut out, v);
    }
    out
}

/// Packs owned values.
pub fn pack_owned(values: &[Value]) -> Vec<u8> {
    pack(values.iter().map(ValueRef::from))
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], UnpackError> {
    if buf.len() < n {
        return Err(UnpackError::Truncated);
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn read_be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64)
}

/// Unpacks a key. Never panics or over-allocates on hostile input.
pub fn unpack(buf: &[u8]) -> Result<Vec<Value>, UnpackError> {
    let mut out = Vec::with_capacity(buf.first().copied().unwrap_or(0) as usize);
    unpack_into(buf, &mut out)?;
    Ok(out)
}

/// Unpacks a key, appending its values to `out` (on error, `out` may hold some of them).
pub fn unpack_into(mut buf: &[u8], out: &mut Vec<Value>) -> Result<(), UnpackError> {
    let n = take(&mut buf, 1)?[0] as usize;
    for _ in 0..n {
        let header = take(&mut buf, 1)?[0];
        let len = (header >> 3) as usize;
        let v = match header & 7 {
            1 => {
                if len > 8 {
                    return Err(UnpackError::BadLength);
                }
                // Negative numbers always use 8 bytes, so no sign extension is needed.
                Value::Integer(read_be(take(&mut buf, len)?) as i64)
            }
            2 => Value::Real(f64::from_be_bytes(
                take(&mut buf, 8)?.try_into().expect("8 bytes"),
            )),
            ty @ (3 | 4) => {
                if len > 8 {
                    return Err(UnpackError::BadLength);
                }
                let size = read_be(take(&mut buf, len)?);
                let size = usize::try_from(size).map_err(|_| UnpackError::BadLength)?;
                let bytes = take(&mut buf, size)?;
                if ty == 3 {
                    Value::Text(
                        String::from_utf8(bytes.to_vec()).map_err(|_| UnpackError::BadUtf8)?,
                    )
                } else {
                    Value::Blob(bytes.to_vec())
                }
            }
            5 => Value::Null,
            t => return Err(UnpackError::BadType(t)),
        };
        out.push(v);
    }
    if !buf.is_empty() {
        return Err(UnpackError::Trailing(buf.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        assert_eq!(pack_owned(&[Value::Integer(1)]), vec![1, 0x09, 1]);
        assert_eq!(pack_owned(&[Value::Integer(0)]), vec![1, 0x01]);
        assert_eq!(
            pack_owned(&[Value::Integer(-1)]),
            vec![1, 0x41, 255, 255, 255, 255, 255, 255, 255, 255]
        );
        assert_eq!(
            pack_owned(&[Value::Text("ab".into())]),
            vec![1, 0x0b, 2, b'a', b'b']
        );
        assert_eq!(
            pack_owned(&[Value::Null, Value::Blob(vec![])]),
            vec![2, 5, 0x04]
        );
    }

    #[test]
    fn hostile_input_is_rejected() {
        assert_eq!(unpack(&[]), Err(UnpackError::Truncated));
        assert_eq!(unpack(&[1, 0x0b, 200]), Err(UnpackError::Truncated));
        assert_eq!(unpack(&[1, 0x07]), Err(UnpackError::BadType(7)));
        assert_eq!(unpack(&[1, 0x09, 1, 0]), Err(UnpackError::Trailing(1)));
        assert_eq!(unpack(&[1, 0xfb]), Err(UnpackError::BadLength));
    }

    proptest! {
        #[test]
        fn round_trip(vals in proptest::collection::vec(prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Integer),
            any::<f64>().prop_filter("no NaN", |f| !f.is_nan()).prop_map(Value::Real),
            ".{0,20}".prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::Blob),
        ], 0..6)) {
            prop_assert_eq!(unpack(&pack_owned(&vals)).unwrap(), vals);
        }

        #[test]
        fn unpack_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = unpack(&bytes);
        }
    }
}
