//! Conversions between the wire types (`verdigris-api-types`) and the store's statements, and
//! the `{"error": …}` body.

use crate::store::{Params, Statement};
use verdigris_api_types::Statement as WireStatement;

/// The store's statement for a wire statement (values move, nothing is copied).
pub fn statement(s: WireStatement) -> Statement {
    match s {
        WireStatement::Simple(sql) => Statement::new(sql),
        WireStatement::WithParams(sql, ps) => Statement {
            sql,
            params: Params::Positional(ps.into_iter().map(Into::into).collect()),
        },
        WireStatement::WithNamedParams(sql, ps) => Statement {
            sql,
            params: Params::Named(ps.into_iter().map(|(k, v)| (k, v.into())).collect()),
        },
    }
}

/// Decodes a statement in any of its four JSON forms into the store's statement.
pub fn decode_statement(v: serde_json::Value) -> Result<Statement, String> {
    WireStatement::from_json(v).map(statement)
}

/// `{"error": msg}` as bytes.
pub fn error_body(msg: &str) -> Vec<u8> {
    crate::subs::attach::to_json(&verdigris_api_types::TypedQueryEvent::<()>::Error(
        msg.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::types::Value;
    use serde_json::json;

    #[test]
    fn wire_statements_become_store_statements() {
        assert_eq!(
            decode_statement(json!(["SELECT ?", [1, "x", [0, 255], true]]))
                .unwrap()
                .params,
            Params::Positional(vec![
                Value::Integer(1),
                Value::Text("x".into()),
                Value::Blob(vec![0, 255]),
                Value::Integer(1)
            ])
        );
        assert_eq!(
            decode_statement(json!(["SELECT :a", {":a": 1.5}]))
                .unwrap()
                .params,
            Params::Named(vec![(":a".into(), Value::Real(1.5))])
        );
        assert_eq!(
            decode_statement(json!({"query": "SELECT 1"})).unwrap(),
            Statement::new("SELECT 1")
        );
        assert!(decode_statement(json!(42)).is_err());
    }

    #[test]
    fn error_body_shape() {
        assert_eq!(error_body("x\"y"), br#"{"error":"x\"y"}"#);
    }
}
