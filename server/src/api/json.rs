//! Corrosion's JSON encodings: statements (four forms), bound parameters, and result values.

use crate::store::{Params, Statement};
use rusqlite::types::Value;
use serde_json::{json, Map, Value as Json};

/// Decodes a statement in any of its four forms:
/// `"SQL"`, `["SQL", [params]]`, `["SQL", {":name": value}]`,
/// `{"query": "SQL", "params": [..], "named_params": {..}}`. Takes the JSON by value: the
/// SQL and text parameters move into the statement instead of being copied.
pub fn statement(v: Json) -> Result<Statement, String> {
    match v {
        Json::String(sql) => Ok(Statement::new(sql)),
        Json::Array(items) => {
            let mut items = items.into_iter();
            match (items.next(), items.next(), items.next()) {
                (Some(Json::String(sql)), None, None) => Ok(Statement::new(sql)),
                (Some(Json::String(sql)), Some(Json::Array(ps)), None) => Ok(Statement {
                    sql,
                    params: positional(ps),
                }),
                (Some(Json::String(sql)), Some(Json::Object(ps)), None) => Ok(Statement {
                    sql,
                    params: named(ps)?,
                }),
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
                return Err(format!("unknown field {k:?} in statement object (expected query, params, named_params)"));
            }
            let params = match (obj.remove("params"), obj.remove("named_params")) {
                (Some(Json::Array(ps)), _) => positional(ps),
                (Some(Json::Null) | None, Some(Json::Object(ps))) => named(ps)?,
                (Some(Json::Null) | None, Some(Json::Null) | None) => Params::None,
                (Some(_), _) => return Err("\"params\" must be an array".into()),
                (_, Some(_)) => return Err("\"named_params\" must be an object".into()),
            };
            Ok(Statement { sql, params })
        }
        _ => Err(
            "a statement must be a string, an array [\"SQL\", params] or an object {\"query\": …}"
                .into(),
        ),
    }
}

fn positional(ps: Vec<Json>) -> Params {
    Params::Positional(ps.into_iter().map(param).collect())
}

fn named(ps: Map<String, Json>) -> Result<Params, String> {
    let mut out = Vec::with_capacity(ps.len());
    for (k, v) in ps {
        if !k.starts_with([':', '@', '$']) {
            return Err(format!(
                "named parameter {k:?} must include its prefix, e.g. \":{k}\""
            ));
        }
        out.push((k, param(v)));
    }
    Ok(Params::Named(out))
}

/// A bound parameter: null, bool (0/1), integer, real, text, byte array (BLOB); any other JSON
/// (objects, mixed arrays) is bound as its JSON text.
pub fn param(v: Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Integer(b as i64),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::Text(s),
        Json::Array(items) => {
            let bytes: Option<Vec<u8>> = items
                .iter()
                .map(|i| i.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            match bytes {
                Some(b) => Value::Blob(b),
                None => Value::Text(Json::Array(items).to_string()),
            }
        }
        v @ Json::Object(_) => Value::Text(v.to_string()),
    }
}

/// A result cell: BLOBs as byte arrays; non-finite reals (which JSON lacks) as null.
pub fn cell(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Integer(i) => json!(i),
        Value::Real(f) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .unwrap_or(Json::Null),
        Value::Text(s) => Json::String(s.clone()),
        Value::Blob(b) => Json::Array(b.iter().map(|x| json!(x)).collect()),
    }
}

pub fn cells(vs: &[Value]) -> Json {
    Json::Array(vs.iter().map(cell).collect())
}

/// `{"error": msg}` as bytes.
pub fn error_body(msg: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({ "error": msg })).expect("json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_statement_forms() {
        assert_eq!(
            statement(json!("SELECT 1")).unwrap(),
            Statement::new("SELECT 1")
        );
        assert_eq!(
            statement(json!(["SELECT ?", [1, "x"]])).unwrap().params,
            Params::Positional(vec![Value::Integer(1), Value::Text("x".into())])
        );
        assert_eq!(
            statement(json!(["SELECT :a", {":a": 1.5}])).unwrap().params,
            Params::Named(vec![(":a".into(), Value::Real(1.5))])
        );
        assert_eq!(
            statement(json!({"query": "SELECT ?", "params": [null]}))
                .unwrap()
                .params,
            Params::Positional(vec![Value::Null])
        );
        assert_eq!(
            statement(json!({"query": "SELECT 1"})).unwrap().params,
            Params::None
        );
        assert!(statement(json!(["SELECT :a", {"a": 1}]))
            .unwrap_err()
            .contains(":a"));
        assert!(statement(json!(42)).is_err());
        assert!(statement(json!({"sql": "x"})).is_err());
    }

    #[test]
    fn parameter_encodings() {
        assert_eq!(param(json!(true)), Value::Integer(1));
        assert_eq!(param(json!(u64::MAX)), Value::Real(u64::MAX as f64));
        assert_eq!(param(json!([0, 255])), Value::Blob(vec![0, 255]));
        assert_eq!(param(json!([1, "a"])), Value::Text("[1,\"a\"]".into()));
        assert_eq!(param(json!({"a": 1})), Value::Text("{\"a\":1}".into()));
        assert_eq!(param(json!([256])), Value::Text("[256]".into()));
    }

    #[test]
    fn cell_encodings() {
        assert_eq!(cell(&Value::Blob(vec![1, 2])), json!([1, 2]));
        assert_eq!(cell(&Value::Real(0.5)), json!(0.5));
        assert_eq!(cell(&Value::Integer(-3)), json!(-3));
        assert_eq!(cell(&Value::Null), json!(null));
    }
}
