//! One SQLite value as JSON: null, integer, real, text, or a BLOB as an array of bytes.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A SQLite value. On the wire: `null`, a number, a string, or a BLOB as an array of bytes
/// (`[0, 255]`). Reals that JSON cannot carry (NaN, ±∞) are sent as `null`.
///
/// Decoding is lenient the way Corrosion's parameters are: `true`/`false` become integers 1/0,
/// an integer beyond `i64` becomes a real, and any other JSON (an object, an array that is not
/// all bytes) is kept as its JSON text.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum SqliteValue {
    #[default]
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl SqliteValue {
    /// The integer, if this is one.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            SqliteValue::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The text, if this is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            SqliteValue::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, SqliteValue::Null)
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for SqliteValue {
            fn from(v: $t) -> Self { SqliteValue::Integer(v as i64) }
        }
    )*};
}
from_int!(i8, i16, i32, i64, u8, u16, u32, bool);

impl From<f64> for SqliteValue {
    fn from(v: f64) -> Self {
        SqliteValue::Real(v)
    }
}
impl From<&str> for SqliteValue {
    fn from(v: &str) -> Self {
        SqliteValue::Text(v.to_string())
    }
}
impl From<String> for SqliteValue {
    fn from(v: String) -> Self {
        SqliteValue::Text(v)
    }
}
impl From<Vec<u8>> for SqliteValue {
    fn from(v: Vec<u8>) -> Self {
        SqliteValue::Blob(v)
    }
}
impl<T: Into<SqliteValue>> From<Option<T>> for SqliteValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(SqliteValue::Null, Into::into)
    }
}

impl Serialize for SqliteValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SqliteValue::Null => s.serialize_unit(),
            SqliteValue::Integer(i) => s.serialize_i64(*i),
            SqliteValue::Real(f) if f.is_finite() => s.serialize_f64(*f),
            SqliteValue::Real(_) => s.serialize_unit(),
            SqliteValue::Text(t) => s.serialize_str(t),
            SqliteValue::Blob(b) => {
                let mut seq = s.serialize_seq(Some(b.len()))?;
                for byte in b {
                    seq.serialize_element(byte)?;
                }
                seq.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for SqliteValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = SqliteValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a SQLite value (null, number, string, or an array of bytes)")
    }
    fn visit_unit<E>(self) -> Result<SqliteValue, E> {
        Ok(SqliteValue::Null)
    }
    fn visit_none<E>(self) -> Result<SqliteValue, E> {
        Ok(SqliteValue::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<SqliteValue, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
    fn visit_bool<E>(self, v: bool) -> Result<SqliteValue, E> {
        Ok(SqliteValue::Integer(v as i64))
    }
    fn visit_i64<E>(self, v: i64) -> Result<SqliteValue, E> {
        Ok(SqliteValue::Integer(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<SqliteValue, E> {
        Ok(i64::try_from(v).map_or(SqliteValue::Real(v as f64), SqliteValue::Integer))
    }
    fn visit_f64<E>(self, v: f64) -> Result<SqliteValue, E> {
        Ok(SqliteValue::Real(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<SqliteValue, E> {
        Ok(SqliteValue::Text(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<SqliteValue, E> {
        Ok(SqliteValue::Text(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<SqliteValue, E> {
        Ok(SqliteValue::Blob(v.to_vec()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SqliteValue, A::Error> {
        // All bytes → BLOB; anything else is kept as its JSON text.
        let mut items: Vec<serde_json::Value> = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        let bytes: Option<Vec<u8>> = items
            .iter()
            .map(|i| i.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect();
        Ok(match bytes {
            Some(b) => SqliteValue::Blob(b),
            None => SqliteValue::Text(serde_json::Value::Array(items).to_string()),
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SqliteValue, A::Error> {
        let v = serde_json::Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(SqliteValue::Text(v.to_string()))
    }
}

#[cfg(feature = "rusqlite")]
mod sqlite {
    use super::SqliteValue;
    use rusqlite::types::{ToSql, ToSqlOutput, Value, ValueRef};

    impl From<Value> for SqliteValue {
        fn from(v: Value) -> Self {
            match v {
                Value::Null => SqliteValue::Null,
                Value::Integer(i) => SqliteValue::Integer(i),
                Value::Real(f) => SqliteValue::Real(f),
                Value::Text(t) => SqliteValue::Text(t),
                Value::Blob(b) => SqliteValue::Blob(b),
            }
        }
    }

    impl From<&Value> for SqliteValue {
        fn from(v: &Value) -> Self {
            v.clone().into()
        }
    }

    impl From<SqliteValue> for Value {
        fn from(v: SqliteValue) -> Self {
            match v {
                SqliteValue::Null => Value::Null,
                SqliteValue::Integer(i) => Value::Integer(i),
                SqliteValue::Real(f) => Value::Real(f),
                SqliteValue::Text(t) => Value::Text(t),
                SqliteValue::Blob(b) => Value::Blob(b),
            }
        }
    }

    impl ToSql for SqliteValue {
        fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
            Ok(ToSqlOutput::Borrowed(match self {
                SqliteValue::Null => ValueRef::Null,
                SqliteValue::Integer(i) => ValueRef::Integer(*i),
                SqliteValue::Real(f) => ValueRef::Real(*f),
                SqliteValue::Text(t) => ValueRef::Text(t.as_bytes()),
                SqliteValue::Blob(b) => ValueRef::Blob(b),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn de(v: serde_json::Value) -> SqliteValue {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn decodes_every_form() {
        assert_eq!(de(json!(null)), SqliteValue::Null);
        assert_eq!(de(json!(true)), SqliteValue::Integer(1));
        assert_eq!(de(json!(-3)), SqliteValue::Integer(-3));
        assert_eq!(de(json!(u64::MAX)), SqliteValue::Real(u64::MAX as f64));
        assert_eq!(de(json!(0.5)), SqliteValue::Real(0.5));
        assert_eq!(de(json!("x")), SqliteValue::Text("x".into()));
        assert_eq!(de(json!([0, 255])), SqliteValue::Blob(vec![0, 255]));
        assert_eq!(de(json!([256])), SqliteValue::Text("[256]".into()));
        assert_eq!(de(json!({"a": 1})), SqliteValue::Text("{\"a\":1}".into()));
    }

    #[test]
    fn encodes_like_corrosion() {
        let enc = |v: SqliteValue| serde_json::to_string(&v).unwrap();
        assert_eq!(enc(SqliteValue::Blob(vec![1, 2])), "[1,2]");
        assert_eq!(enc(SqliteValue::Real(f64::NAN)), "null");
        assert_eq!(enc(SqliteValue::Integer(i64::MIN)), i64::MIN.to_string());
        assert_eq!(enc(SqliteValue::Text("é\"".into())), "\"é\\\"\"");
    }
}
