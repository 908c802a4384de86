//! The registry of replicated tables: their columns, primary key and the SQL the store runs
//! against them, prepared once per schema version.

use anyhow::{Context, Result};
use rusqlite::Connection;
use std::collections::HashMap;

/// Quotes an identifier for SQL.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Name of the clock table of a replicated table.
pub fn clock_table(table: &str) -> String {
    format!("{table}__vd_clock")
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// Declared type, as written.
    pub decl_type: String,
    pub not_null: bool,
    pub default: Option<String>,
    /// 1-based position in the primary key, 0 if not part of it.
    pub pk: u32,
}

#[derive(Debug)]
pub struct TableInfo {
    pub id: u32,
    pub name: String,
    /// `name`, shared by the change reports and changes that name this table once per row
    /// or cell.
    pub shared_name: std::sync::Arc<str>,
    /// Column names in table order, shared the same way.
    pub column_names: Vec<std::sync::Arc<str>>,
    /// The key is the table's rowid (`INTEGER PRIMARY KEY` of a rowid table).
    pub rowid_key: bool,
    /// An insert of given values (`literal_insert`) can only store UTF-8 text here: no
    /// triggers (only possible on a table adopted with them: clients may not create triggers
    /// on replicated tables), and every default is a literal (an expression could compute text).
    pub literal_inserts_are_utf8: bool,
    pub columns: Vec<Column>,
    /// Indexes into `columns`, in primary-key order.
    pub pk_cols: Vec<usize>,
    /// Indexes into `columns` of the replicated (non-key) columns.
    pub value_cols: Vec<usize>,
    by_name: HashMap<String, usize>,
    pub sql: TableSql,
}

/// Clocks are inserted up to 2^CLOCK_BATCH_LOG2 rows per statement.
pub const CLOCK_BATCH_LOG2: usize = 6;

/// SQL text for the statements the store runs on one table (used with `prepare_cached`).
#[derive(Debug)]
pub struct TableSql {
    /// `WHERE` clause matching the key, parameters ?1..?n.
    pub pk_where: String,
    pub clock_get: String,
    pub clock_put: String,
    /// `clock_insert_many[k]`: inserts 2^k clocks at once, skipping keys that have one.
    pub clock_insert_many: Vec<String>,
    pub row_get: String,
    /// The clock and every column of one row (columns NULL once the row is deleted).
    pub clock_and_row: String,
    pub row_delete: String,
    pub row_insert_key: String,
}

impl TableInfo {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.by_name.get(&name.to_ascii_lowercase()).copied()
        } else {
            self.by_name.get(name).copied()
        }
    }

    fn build(
        id: u32,
        name: String,
        columns: Vec<Column>,
        (rowid_key, has_triggers): (bool, bool),
    ) -> TableInfo {
        let mut pk_cols: Vec<usize> = (0..columns.len()).filter(|i| columns[*i].pk > 0).collect();
        pk_cols.sort_by_key(|i| columns[*i].pk);
        let value_cols = (0..columns.len()).filter(|i| columns[*i].pk == 0).collect();
        let by_name = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.to_ascii_lowercase(), i))
            .collect();
        let pk_names: Vec<String> = pk_cols.iter().map(|i| quote(&columns[*i].name)).collect();
        let placeholders: Vec<String> = (1..=pk_cols.len()).map(|i| format!("?{i}")).collect();
        let pk_where = pk_names
            .iter()
            .zip(&placeholders)
            .map(|(n, p)| format!("{n} = {p}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let t = quote(&name);
        let ct = quote(&clock_table(&name));
        let all_cols = columns
            .iter()
            .map(|c| quote(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let key_list = pk_names.join(", ");
        let key_params = placeholders.join(", ");
        let n = pk_cols.len();
        let sql = TableSql {
            clock_get: format!("SELECT clock FROM {ct} WHERE {pk_where}"),
            clock_put: format!(
                "INSERT OR REPLACE INTO {ct} ({key_list}, clock) VALUES ({key_params}, ?{})",
                n + 1
            ),
            clock_insert_many: (0..=CLOCK_BATCH_LOG2)
                .map(|k| {
                    let tuple = format!("({})", vec!["?"; n + 1].join(", "));
                    format!(
                        "INSERT INTO {ct} ({key_list}, clock) VALUES {} ON CONFLICT DO NOTHING",
                        vec![tuple.as_str(); 1 << k].join(", ")
                    )
                })
                .collect(),
            row_get: format!("SELECT {all_cols} FROM {t} WHERE {pk_where}"),
            clock_and_row: {
                let on = pk_names
                    .iter()
                    .map(|k| format!("r.{k} = c.{k}"))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                let cols = columns
                    .iter()
                    .map(|c| format!("r.{}", quote(&c.name)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let at = pk_names
                    .iter()
                    .zip(&placeholders)
                    .map(|(k, p)| format!("c.{k} = {p}"))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                format!(
                    "SELECT c.clock, {cols} FROM {ct} AS c LEFT JOIN {t} AS r ON {on} WHERE {at}"
                )
            },
            row_delete: format!("DELETE FROM {t} WHERE {pk_where}"),
            row_insert_key: format!("INSERT OR IGNORE INTO {t} ({key_list}) VALUES ({key_params})"),
            pk_where,
        };
        TableInfo {
            id,
            shared_name: name.as_str().into(),
            column_names: columns.iter().map(|c| c.name.as_str().into()).collect(),
            rowid_key,
            literal_inserts_are_utf8: !has_triggers
                && columns
                    .iter()
                    .all(|c| c.default.as_deref().is_none_or(is_literal_default)),
            name,
            columns,
            pk_cols,
            value_cols,
            by_name,
            sql,
        }
    }

    /// `INSERT … ON CONFLICT DO UPDATE` writing the key plus the given columns.
    pub fn upsert_sql(&self, cols: &[usize]) -> String {
        let names: Vec<String> = self
            .pk_cols
            .iter()
            .chain(cols)
            .map(|i| quote(&self.columns[*i].name))
            .collect();
        let params: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
        let keys: Vec<String> = self
            .pk_cols
            .iter()
            .map(|i| quote(&self.columns[*i].name))
            .collect();
        let sets: Vec<String> = cols
            .iter()
            .map(|i| {
                let c = quote(&self.columns[*i].name);
                format!("{c} = excluded.{c}")
            })
            .collect();
        let action = if sets.is_empty() {
            "NOTHING".to_string()
        } else {
            format!("UPDATE SET {}", sets.join(", "))
        };
        format!(
            "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO {action}",
            quote(&self.name),
            names.join(", "),
            params.join(", "),
            keys.join(", ")
        )
    }

    /// `INSERT OR REPLACE` of the key plus the given columns: resets every other column to its default.
    pub fn replace_sql(&self, cols: &[usize]) -> String {
        let names: Vec<String> = self
            .pk_cols
            .iter()
            .chain(cols)
            .map(|i| quote(&self.columns[*i].name))
            .collect();
        let params: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
        format!(
            "INSERT OR REPLACE INTO {} ({}) VALUES ({})",
            quote(&self.name),
            names.join(", "),
            params.join(", ")
        )
    }
}

/// Reads the columns of a table from SQLite.
pub fn read_columns(conn: &Connection, table: &str) -> Result<Vec<Column>> {
    let mut stmt = conn.prepare(
        "SELECT name, type, \"notnull\", dflt_value, pk, hidden FROM pragma_table_xinfo(?1)",
    )?;
    let rows = stmt.query_map([table], |r| {
        Ok((
            Column {
                name: r.get(0)?,
                decl_type: r.get(1)?,
                not_null: r.get::<_, i64>(2)? != 0,
                default: r.get(3)?,
                pk: r.get(4)?,
            },
            r.get::<_, i64>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (col, hidden) = row?;
        if hidden == 0 {
            out.push(col);
        }
    }
    Ok(out)
}

/// Whether the table's only key column is its rowid (so every key is an integer): a rowid
/// table whose single key column is declared `INTEGER`, and which SQLite did not give a key
/// index (it does for the `INTEGER PRIMARY KEY DESC` form, which is not an alias).
pub(crate) fn is_rowid_alias(conn: &Connection, name: &str, pks: &[&Column]) -> Result<bool> {
    if pks.len() != 1 || !pks[0].decl_type.eq_ignore_ascii_case("INTEGER") {
        return Ok(false);
    }
    if is_without_rowid(conn, name)? {
        return Ok(false);
    }
    let key_indexes: i64 = conn.query_row(
        "SELECT count(*) FROM pragma_index_list(?1) WHERE origin = 'pk'",
        [name],
        |r| r.get(0),
    )?;
    Ok(key_indexes == 0)
}

pub(crate) fn is_without_rowid(conn: &Connection, name: &str) -> Result<bool> {
    let ddl: String = conn.query_row(
        "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get(0),
    )?;
    Ok(ddl.to_ascii_uppercase().contains("WITHOUT ROWID"))
}

/// A column default SQLite stores as written that is a plain literal (no expression).
fn is_literal_default(d: &str) -> bool {
    let d = d.trim();
    let upper = d.to_ascii_uppercase();
    (d.starts_with('\'') && d.ends_with('\'') && d.len() >= 2)
        || matches!(
            upper.as_str(),
            "NULL" | "TRUE" | "FALSE" | "CURRENT_TIME" | "CURRENT_DATE" | "CURRENT_TIMESTAMP"
        )
        || d.trim_start_matches(['-', '+']).parse::<f64>().is_ok()
}

/// All replicated tables.
#[derive(Debug, Default)]
pub struct Catalog {
    tables: Vec<TableInfo>,
    by_name: HashMap<String, usize>,
    by_id: HashMap<u32, usize>,
}

impl Catalog {
    pub fn load(conn: &Connection) -> Result<Catalog> {
        let mut stmt = conn.prepare("SELECT id, name FROM __vd_tables ORDER BY id")?;
        let names = stmt
            .query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut cat = Catalog::default();
        for (id, name) in names {
            let columns =
                read_columns(conn, &name).with_context(|| format!("reading columns of {name}"))?;
            cat.by_name
                .insert(name.to_ascii_lowercase(), cat.tables.len());
            cat.by_id.insert(id, cat.tables.len());
            let pks: Vec<&Column> = {
                let mut pks: Vec<&Column> = columns.iter().filter(|c| c.pk > 0).collect();
                pks.sort_by_key(|c| c.pk);
                pks
            };
            let rowid_key = is_rowid_alias(conn, &name, &pks)?;
            let triggers: i64 = conn.query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = ?1 COLLATE NOCASE",
                [&name],
                |r| r.get(0),
            )?;
            cat.tables.push(TableInfo::build(
                id,
                name,
                columns,
                (rowid_key, triggers > 0),
            ));
        }
        Ok(cat)
    }

    pub fn get(&self, name: &str) -> Option<&TableInfo> {
        self.by_name
            .get(&name.to_ascii_lowercase())
            .map(|i| &self.tables[*i])
    }

    pub fn by_id(&self, id: u32) -> Option<&TableInfo> {
        self.by_id.get(&id).map(|i| &self.tables[*i])
    }

    pub fn tables(&self) -> &[TableInfo] {
        &self.tables
    }

    pub fn is_internal(name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        lower.starts_with("__vd_") || lower.ends_with("__vd_clock") || lower.starts_with("sqlite_")
    }
}
