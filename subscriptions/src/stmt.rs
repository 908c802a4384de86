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
