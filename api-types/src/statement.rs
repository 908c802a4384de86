//! A SQL statement with its parameters, in Corrosion's four JSON forms.

use crate::SqliteValue;
use serde::de::{Deserializer, Error as _};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

/// A statement: `"SQL"`, `["SQL", [params…]]`, `["SQL", {":name": value}]`, or
/// `{"query": "SQL", "params": [..], "named_params": {..}}`.
///
/// Named parameters keep SQLite's prefix (`:`, `@` or `$`) in their name.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    Simple(String),
    WithParams(String, Vec<SqliteValue>),
    WithNamedParams(String, Vec<(String, SqliteValue)>),
}

impl Statement {
    /// A statement without parameters.
    pub fn new(sql: impl Into<String>) -> Statement {
        Statement::Simple(sql.into())
    }

    /// A statement with positional (`?`, `?N`) parameters.
    pub fn with_params<V: Into<SqliteValue>>(
        sql: impl Into<String>,
        params: impl IntoIterator<Item = V>,
    ) -> Statement {
        Statement::WithParams(sql.into(), params.into_iter().map(Into::into).collect())
    }

    /// A statement with named (`:name`, `@name`, `$name`) parameters.
    pub fn with_named_params<K: Into<String>, V: Into<SqliteValue>>(
        sql: impl Into<String>,
        params: impl IntoIterator<Item = (K, V)>,
    ) -> Statement {
        Statement::WithNamedParams(
            sql.into(),
            params
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    pub fn sql(&self) -> &str {
        match self {
            Statement::Simple(s)
            | Statement::WithParams(s, _)
            | Statement::WithNamedParams(s, _) => s,
        }
    }

    /// Decodes any of the four forms, with an error that says which form was expected.
    /// Takes the JSON by value: the SQL and text parameters move instead of being copied.
    pub fn from_json(v: Json) -> Result<Statement, String> {
        match v {
            Json::String(sql) => Ok(Statement::Simple(sql)),
            Json::Array(items) => {
                let mut items = items.into_iter();
                match (items.next(), items.next(), items.next()) {
                    (Some(Json::String(sql)), None, None) => Ok(Statement::Simple(sql)),
                    (Some(Json::String(sql)), Some(Json::Array(ps)), None) => {
                        Ok(Statement::WithParams(sql, positional(ps)?))
                    }
                    (Some(Json::String(sql)), Some(Json::Object(ps)), None) => {
                        Ok(Statement::WithNamedParams(sql, named(ps)?))
                    }
                    _ => Err(
                        "a statement array must be [\"SQL\", [params…]] or [\"SQL\", {\":name\": value}]"
                            .into(),
                    ),
                }
            }
            Json::Object(mut obj) => {
                let Some(Json::String(sql)) = obj.remove("query") else {
                    return Err("a statement object needs a \"query\" string, e.g. {\"query\": \"SELECT 1\", \"params\": []}".into());
                };
                if let Some(k) = obj
                    .keys()
                    .find(|k| !matches!(k.as_str(), "params" | "named_params"))
                {
                    return Err(format!(
                        "unknown field {k:?} in statement object (expected query, params, named_params)"
                    ));
                }
                Self::from_parts(sql, obj.remove("params"), obj.remove("named_params"))
            }
            _ => Err(
                "a statement must be a string, an array [\"SQL\", params] or an object {\"query\": …}"
                    .into(),
            ),
        }
    }

    /// A statement from its SQL and optional `params` (array) / `named_params` (object), as
    /// the verbose form and the WebSocket messages carry them; positional wins if both are set.
    pub fn from_parts(
        sql: String,
        params: Option<Json>,
        named_params: Option<Json>,
    ) -> Result<Statement, String> {
        match (params, named_params) {
            (Some(Json::Array(ps)), _) => Ok(Statement::WithParams(sql, positional(ps)?)),
            (Some(Json::Null) | None, Some(Json::Object(ps))) => {
                Ok(Statement::WithNamedParams(sql, named(ps)?))
            }
            (Some(Json::Null) | None, Some(Json::Null) | None) => Ok(Statement::Simple(sql)),
            (Some(_), _) => Err("\"params\" must be an array".into()),
            (_, Some(_)) => Err("\"named_params\" must be an object".into()),
        }
    }
}

fn positional(ps: Vec<Json>) -> Result<Vec<SqliteValue>, String> {
    ps.into_iter()
        .enumerate()
        .map(|(i, p)| serde_json::from_value(p).map_err(|e| format!("parameter {}: {e}", i + 1)))
        .collect()
}

fn named(ps: Map<String, Json>) -> Result<Vec<(String, SqliteValue)>, String> {
    let mut out = Vec::with_capacity(ps.len());
    for (k, v) in ps {
        if !k.starts_with([':', '@', '$']) {
            return Err(format!(
                "named parameter {k:?} must include its prefix, e.g. \":{k}\""
            ));
        }
        let v = serde_json::from_value(v).map_err(|e| format!("parameter {k}: {e}"))?;
        out.push((k, v));
    }
    Ok(out)
}

impl From<&str> for Statement {
    fn from(sql: &str) -> Self {
        Statement::Simple(sql.to_string())
    }
}

impl From<String> for Statement {
    fn from(sql: String) -> Self {
        Statement::Simple(sql)
    }
}

struct Named<'a>(&'a [(String, SqliteValue)]);

impl Serialize for Named<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl Serialize for Statement {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Statement::Simple(sql) => s.serialize_str(sql),
            Statement::WithParams(sql, ps) => {
                let mut seq = s.serialize_seq(Some(2))?;
                seq.serialize_element(sql)?;
                seq.serialize_element(ps)?;
                seq.end()
            }
            Statement::WithNamedParams(sql, ps) => {
                let mut seq = s.serialize_seq(Some(2))?;
                seq.serialize_element(sql)?;
                seq.serialize_element(&Named(ps))?;
                seq.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Statement {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Statement::from_json(Json::deserialize(d)?).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn four_forms_decode() {
        assert_eq!(
            Statement::from_json(json!("SELECT 1")).unwrap(),
            Statement::new("SELECT 1")
        );
        assert_eq!(
            Statement::from_json(json!(["SELECT ?", [1, "x"]])).unwrap(),
            Statement::with_params("SELECT ?", [SqliteValue::Integer(1), "x".into()])
        );
        assert_eq!(
            Statement::from_json(json!(["SELECT :a", {":a": 1.5}])).unwrap(),
            Statement::with_named_params("SELECT :a", [(":a", 1.5)])
        );
        assert_eq!(
            Statement::from_json(json!({"query": "SELECT ?", "params": [null]})).unwrap(),
            Statement::with_params("SELECT ?", [SqliteValue::Null])
        );
        assert_eq!(
            Statement::from_json(json!({"query": "SELECT 1"})).unwrap(),
            Statement::new("SELECT 1")
        );
        assert!(Statement::from_json(json!(["SELECT :a", {"a": 1}]))
            .unwrap_err()
            .contains(":a"));
        assert!(Statement::from_json(json!(42)).is_err());
        assert!(Statement::from_json(json!({"sql": "x"})).is_err());
    }

    #[test]
    fn round_trips() {
        for s in [
            Statement::new("SELECT 1"),
            Statement::with_params(
                "SELECT ?, ?",
                [SqliteValue::Blob(vec![1]), SqliteValue::Null],
            ),
            Statement::with_named_params("SELECT :a", [(":a", "x")]),
        ] {
            let text = serde_json::to_string(&s).unwrap();
            assert_eq!(
                serde_json::from_str::<Statement>(&text).unwrap(),
                s,
                "{text}"
            );
        }
    }
}
