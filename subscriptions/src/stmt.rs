//! Statements as clients send them (SQL plus positional or named parameters) and binding them.

use rusqlite::types::Value;
use rusqlite::Statement as Prepared;

#[derive(Debug, Clone, PartialEq, Default)]
pub enum Params {
    #[default]
    None,
    Positional(Vec<Value>),
    /// Names include their prefix (`:a`, `@a`, `$a`).
    Named(Vec<(String, Value)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sql: String,
    pub params: Params,
}

impl Statement {
    pub fn new(sql: impl Into<String>) -> Statement {
        Statement {
            sql: sql.into(),
            params: Params::None,
        }
    }

    pub fn with_params(sql: impl Into<String>, params: Vec<Value>) -> Statement {
        Statement {
            sql: sql.into(),
            params: Params::Positional(params),
        }
    }
}

/// Binds parameters, with errors that say which parameter is wrong.
pub fn bind(stmt: &mut Prepared<'_>, params: &Params) -> Result<(), String> {
    let expected = stmt.parameter_count();
    match params {
        Params::None => {
            if expected > 0 {
                return Err(format!(
                    "statement has {expected} parameter(s) but none were given"
                ));
            }
        }
        Params::Positional(values) => {
            if values.len() != expected {
                return Err(format!(
                    "statement has {expected} parameter(s) but {} were given",
                    values.len()
                ));
            }
            for (i, v) in values.iter().enumerate() {
                stmt.raw_bind_parameter(i + 1, v)
                    .map_err(|e| format!("binding parameter {}: {e}", i + 1))?;
            }
        }
        Params::Named(pairs) => {
            for (name, v) in pairs {
                let idx = stmt
                    .parameter_index(name)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("statement has no parameter named {name} (names include the :, @ or $ prefix)"))?;
                stmt.raw_bind_parameter(idx, v)
                    .map_err(|e| format!("binding parameter {name}: {e}"))?;
            }
        }
    }
    Ok(())
}

/// A TEXT value that is not valid UTF-8 (JSON and the wire format cannot carry it).
#[derive(Debug)]
pub struct NotUtf8 {
    pub column: usize,
}

impl std::fmt::Display for NotUtf8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "column {} holds TEXT that is not valid UTF-8; store binary data as a BLOB",
            self.column + 1
        )
    }
}

impl std::error::Error for NotUtf8 {}

/// Converts a borrowed value; `None` for TEXT that is not UTF-8 (rusqlite's own conversion
/// panics on it).
pub fn owned(v: rusqlite::types::ValueRef<'_>) -> Option<Value> {
    use rusqlite::types::ValueRef as R;
    Some(match v {
        R::Null => Value::Null,
        R::Integer(i) => Value::Integer(i),
        R::Real(f) => Value::Real(f),
        R::Text(b) => Value::Text(std::str::from_utf8(b).ok()?.to_string()),
        R::Blob(b) => Value::Blob(b.to_vec()),
    })
}

/// Reads column `i` of a row as an owned value, with an error (never a panic) for non-UTF-8 TEXT.
pub fn value_at(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Value> {
    owned(row.get_ref(i)?).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            Box::new(NotUtf8 { column: i }),
        )
    })
}
