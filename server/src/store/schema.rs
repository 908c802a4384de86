//! Schema files → validated, additive DDL applied in one transaction.
//!
//! The files may hold `CREATE TABLE`, `CREATE INDEX` and `DROP INDEX IF EXISTS`. They are
//! first executed on a scratch in-memory database (so SQLite itself checks them), then every
//! table is checked against the replication rules (non-null primary key, defaults for NOT NULL
//! columns, no UNIQUE, no foreign keys, no AUTOINCREMENT or generated columns) and compared
//! with the live database: new tables are created, new columns added (no per-row metadata is
//! written, so nothing is gossiped), indexes created or dropped. Removing or changing a column,
//! or changing a primary key, is refused with an error naming the table and column.
//! Tables not mentioned in the files are left alone.

use super::catalog::{
    clock_table, is_rowid_alias, is_without_rowid, quote, read_columns, Catalog, Column,
};
use super::Store;
use anyhow::{anyhow, bail, Context, Result};
use rusqlite::Connection;
use sqlparser::ast::{CreateIndex, CreateTable, ObjectType, Statement as Ast};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What a schema application did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SchemaReport {
    pub created_tables: Vec<String>,
    pub added_columns: Vec<String>,
    pub created_indexes: Vec<String>,
    pub dropped_indexes: Vec<String>,
}

impl SchemaReport {
    pub fn is_empty(&self) -> bool {
        *self == SchemaReport::default()
    }
}

/// Reads the schema files: each path is a `.sql` file or a directory whose `*.sql` files are
/// read in name order. Missing paths are an error.
pub fn read_schema_files(paths: &[PathBuf]) -> Result<String> {
    let mut sql = String::new();
    for p in paths {
        let files: Vec<PathBuf> = if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading schema directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "sql"))
                .collect();
            v.sort();
            v
        } else if p.exists() {
            vec![p.clone()]
        } else {
            bail!(
                "schema path {} does not exist (check db.schema_paths)",
                p.display()
            );
        };
        for f in files {
            let text = std::fs::read_to_string(&f)
                .with_context(|| format!("reading schema file {}", f.display()))?;
            // Checked file by file so the error names the file (line numbers are its own).
            if let Err(e) = Parser::parse_sql(&SQLiteDialect {}, &text) {
                bail!(
                    "schema file {} (db.schema_paths) does not parse: {e}; fix the SQL there (CREATE TABLE, CREATE INDEX, DROP INDEX IF EXISTS)",
                    f.display()
                );
            }
            sql.push_str(&text);
            sql.push_str(";\n");
        }
    }
    Ok(sql)
}

/// A table as the schema files define it.
struct TableDef {
    name: String,
    create_sql: String,
    /// Column definitions as SQL text (for ADD COLUMN), by lower-case name.
    column_sql: BTreeMap<String, String>,
}

/// An index of the schema file: (index name, table name, its CREATE INDEX statement).
type IndexDef = (String, String, String);

/// Splits and classifies the statements; returns table defs, index SQL and dropped index names.
fn parse(sql: &str) -> Result<(Vec<TableDef>, Vec<IndexDef>, Vec<String>)> {
    let stmts = Parser::parse_sql(&SQLiteDialect {}, sql)
        .map_err(|e| anyhow!("schema does not parse: {e}"))?;
    let mut tables = Vec::new();
    let mut indexes = Vec::new();
    let mut drops = Vec::new();
    for s in stmts {
        match &s {
            Ast::CreateTable(CreateTable {
                name,
                temporary,
                query,
                columns,
                ..
            }) => {
                let name = name.0.last().map(|p| p.to_string()).unwrap_or_default();
                let name = name
                    .trim_matches(|c| c == '"' || c == '`' || c == '[' || c == ']')
                    .to_string();
                if *temporary {
                    bail!("table {name}: TEMP tables cannot be part of the schema");
                }
                if query.is_some() {
                    bail!(
                        "table {name}: CREATE TABLE … AS SELECT is not supported; list the columns"
                    );
                }
                if Catalog::is_internal(&name) {
                    bail!("table {name}: names starting with __vd_ or sqlite_, or ending with __vd_clock, are reserved");
                }
                let upper = s.to_string().to_ascii_uppercase();
                if upper.contains("AUTOINCREMENT") {
                    bail!("table {name}: AUTOINCREMENT is not supported (ids must not collide across nodes); use random or node-scoped keys");
                }
                let column_sql = columns
                    .iter()
                    .map(|c| (c.name.value.to_ascii_lowercase(), c.to_string()))
                    .collect();
                tables.push(TableDef {
                    name,
                    create_sql: s.to_string(),
                    column_sql,
                });
            }
            Ast::CreateIndex(CreateIndex {
                name,
                table_name,
                unique,
                ..
            }) => {
                let iname = name
                    .as_ref()
                    .map(|n| n.to_string())
                    .ok_or_else(|| anyhow!("CREATE INDEX needs a name"))?;
                let tname = table_name
                    .0
                    .last()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                if *unique {
                    bail!("index {iname} on {tname}: UNIQUE indexes are not allowed (concurrent inserts on different nodes could not be merged); use a plain index");
                }
                indexes.push((unquote(&iname), unquote(&tname), s.to_string()));
            }
            Ast::Drop {
                object_type: ObjectType::Index,
                if_exists,
                names,
                ..
            } => {
                if !*if_exists {
                    bail!("use DROP INDEX IF EXISTS in schema files (plain DROP INDEX fails on nodes that never had it)");
                }
                drops.extend(names.iter().map(|n| unquote(&n.to_string())));
            }
            other => {
                let text = other.to_string();
                let head: String = text.chars().take(60).collect();
                bail!("unsupported statement in schema: `{head}`; schema files may only contain CREATE TABLE, CREATE INDEX and DROP INDEX IF EXISTS");
            }
        }
    }
    Ok((tables, indexes, drops))
}

fn unquote(s: &str) -> String {
    s.trim_matches(|c| c == '"' || c == '`' || c == '[' || c == ']')
        .to_string()
}

/// Checks the replication rules for one table (as created in the scratch database).
fn check_table(scratch: &Connection, name: &str) -> Result<Vec<Column>> {
    let cols = read_columns(scratch, name)?;
    let hidden: i64 = scratch.query_row(
        "SELECT count(*) FROM pragma_table_xinfo(?1) WHERE hidden != 0",
        [name],
        |r| r.get(0),
    )?;
    if hidden > 0 {
        bail!("table {name}: generated columns are not supported yet");
    }
    let pks: Vec<&Column> = cols.iter().filter(|c| c.pk > 0).collect();
    if pks.is_empty() {
        bail!("table {name}: a PRIMARY KEY is required (rows are identified by their key on every node)");
    }
    let without_rowid = is_without_rowid(scratch, name)?;
    for c in &pks {
        let rowid_alias = pks.len() == 1 && c.decl_type.eq_ignore_ascii_case("INTEGER");
        if !c.not_null && !rowid_alias && !without_rowid {
            bail!("table {name}: primary key column {} must be NOT NULL (e.g. `{} {} NOT NULL PRIMARY KEY`)", c.name, c.name, c.decl_type);
        }
    }
    if let Some(c) = cols
        .iter()
        .find(|c| c.pk == 0 && c.not_null && c.default.is_none())
    {
        bail!("table {name}: column {} is NOT NULL without a DEFAULT; give it a DEFAULT or make it nullable (a row may be created from a partial set of replicated columns)", c.name);
    }
    let uniques: i64 = scratch.query_row(
        "SELECT count(*) FROM pragma_index_list(?1) WHERE \"unique\" = 1 AND origin != 'pk'",
        [name],
        |r| r.get(0),
    )?;
    if uniques > 0 {
        bail!("table {name}: UNIQUE constraints are not allowed (concurrent inserts on different nodes could not be merged); only the primary key is unique");
    }
    let fks: i64 = scratch.query_row(
        "SELECT count(*) FROM pragma_foreign_key_list(?1)",
        [name],
        |r| r.get(0),
    )?;
    if fks > 0 {
        bail!("table {name}: FOREIGN KEY constraints are not allowed (rows arrive from peers in any order)");
    }
    Ok(cols)
}

fn same_column(a: &Column, b: &Column) -> bool {
    a.decl_type.eq_ignore_ascii_case(&b.decl_type)
        && a.not_null == b.not_null
        && a.default == b.default
        && a.pk == b.pk
}

fn describe(c: &Column) -> String {
    let mut s = if c.decl_type.is_empty() {
        "(no type)".to_string()
    } else {
        c.decl_type.clone()
    };
    if c.not_null {
        s.push_str(" NOT NULL");
    }
    if let Some(d) = &c.default {
        s.push_str(&format!(" DEFAULT {d}"));
    }
    if c.pk > 0 {
        s.push_str(" PRIMARY KEY");
    }
    s
}

/// User index names and SQL of a table: name → sql.
fn user_indexes(conn: &Connection, table: &str) -> Result<BTreeMap<String, String>> {
    let mut stmt = conn.prepare("SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND tbl_name = ?1 AND sql IS NOT NULL")?;
    let rows = stmt.query_map([table], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn table_exists(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
        [name],
        |r| r.get::<_, i64>(0),
    )? > 0)
}

impl Store {
    /// Reads the schema files and applies them.
    pub fn apply_schema_files(&mut self, paths: &[PathBuf]) -> Result<SchemaReport> {
        let sql = read_schema_files(paths)?;
        self.apply_schema(&sql)
    }

    /// Applies schema SQL (additive changes only), atomically.
    pub fn apply_schema(&mut self, sql: &str) -> Result<SchemaReport> {
        let (defs, indexes, drops) = parse(sql)?;
        let mut seen = BTreeSet::new();
        for d in &defs {
            if !seen.insert(d.name.to_ascii_lowercase()) {
                bail!("table {} is defined twice in the schema files", d.name);
            }
        }
        let scratch = Connection::open_in_memory()?;
        for d in &defs {
            scratch
                .execute_batch(&d.create_sql)
                .map_err(|e| anyhow!("table {}: {e}", d.name))?;
        }
        for (iname, _, isql) in &indexes {
            scratch
                .execute_batch(isql)
                .map_err(|e| anyhow!("index {iname}: {e}"))?;
        }
        let mut checked = Vec::new();
        for d in &defs {
            checked.push((d, check_table(&scratch, &d.name)?));
        }
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let res = self.apply_checked(&scratch, &checked, &drops);
        match res {
            Ok(report) => {
                self.conn.execute_batch("COMMIT")?;
                self.reload_catalog()?;
                Ok(report)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn apply_checked(
        &mut self,
        scratch: &Connection,
        defs: &[(&TableDef, Vec<Column>)],
        drops: &[String],
    ) -> Result<SchemaReport> {
        let mut report = SchemaReport::default();
        let catalog = self.shared.catalog();
        for (def, cols) in defs {
            let name = &def.name;
            if let Some(live) = catalog.get(name) {
                for lc in &live.columns {
                    match cols.iter().find(|c| c.name.eq_ignore_ascii_case(&lc.name)) {
                        None => bail!("table {name}: column {} was removed from the schema files; dropping columns is destructive and not supported — put it back", lc.name),
                        Some(nc) if !same_column(lc, nc) => bail!(
                            "table {name}: column {} changed from `{}` to `{}`; changing a column is destructive and not supported — add a new column instead",
                            lc.name, describe(lc), describe(nc)
                        ),
                        _ => {}
                    }
                }
                for nc in cols.iter().filter(|c| live.column_index(&c.name).is_none()) {
                    if nc.pk > 0 {
                        bail!("table {name}: column {} cannot be added to the primary key; primary keys never change", nc.name);
                    }
                    let def_sql = def
                        .column_sql
                        .get(&nc.name.to_ascii_lowercase())
                        .context("column definition")?;
                    self.conn
                        .execute_batch(&format!("ALTER TABLE {} ADD COLUMN {def_sql}", quote(name)))
                        .map_err(|e| anyhow!("table {name}: adding column {}: {e}", nc.name))?;
                    report.added_columns.push(format!("{name}.{}", nc.name));
                }
            } else if table_exists(&self.conn, name)? {
                self.adopt_table(name, cols)?;
                report.created_tables.push(name.clone());
            } else {
                self.conn
                    .execute_batch(&def.create_sql)
                    .map_err(|e| anyhow!("table {name}: {e}"))?;
                self.register_table(name, cols)?;
                report.created_tables.push(name.clone());
            }
            // Indexes of this table: the files are authoritative.
            let want = user_indexes(scratch, name)?;
            let have = user_indexes(&self.conn, name)?;
            for (iname, isql) in &have {
                if want.get(iname) != Some(isql) {
                    self.conn
                        .execute_batch(&format!("DROP INDEX IF EXISTS {}", quote(iname)))?;
                    report.dropped_indexes.push(iname.clone());
                }
            }
            for (iname, isql) in &want {
                if have.get(iname) != Some(isql) {
                    self.conn
                        .execute_batch(isql)
                        .map_err(|e| anyhow!("index {iname}: {e}"))?;
                    report.created_indexes.push(iname.clone());
                }
            }
        }
        for iname in drops {
            let exists: i64 = self.conn.query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND name = ?1 AND sql IS NOT NULL",
                [iname],
                |r| r.get(0),
            )?;
            if exists > 0 {
                self.conn
                    .execute_batch(&format!("DROP INDEX IF EXISTS {}", quote(iname)))?;
                report.dropped_indexes.push(iname.clone());
            }
        }
        Ok(report)
    }

    /// Creates the clock table and registers a new replicated table.
    fn register_table(&mut self, name: &str, cols: &[Column]) -> Result<()> {
        let mut pks: Vec<&Column> = cols.iter().filter(|c| c.pk > 0).collect();
        pks.sort_by_key(|c| c.pk);
        let keys = pks
            .iter()
            .map(|c| quote(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        // A table keyed by its rowid gets a clock table keyed the same way: an integer b-tree,
        // which SQLite appends to and packs far better than a WITHOUT ROWID index b-tree (a
        // 100-row insert writes about half as many clock pages). Any other key keeps its
        // declared columns in a WITHOUT ROWID table.
        let ct = quote(&clock_table(name));
        let ddl = if is_rowid_alias(&self.conn, name, &pks)? {
            format!("CREATE TABLE {ct} ({keys} INTEGER PRIMARY KEY, clock BLOB NOT NULL)")
        } else {
            format!("CREATE TABLE {ct} ({keys}, clock BLOB NOT NULL, PRIMARY KEY ({keys})) WITHOUT ROWID")
        };
        self.conn.execute_batch(&ddl)?;
        self.conn
            .execute("INSERT INTO __vd_tables (name) VALUES (?1)", [name])?;
        Ok(())
    }

    /// Makes an existing table (created outside the schema) replicated, if it matches.
    fn adopt_table(&mut self, name: &str, cols: &[Column]) -> Result<()> {
        let live = read_columns(&self.conn, name)?;
        let matches = live.len() == cols.len()
            && live
                .iter()
                .zip(cols)
                .all(|(a, b)| a.name.eq_ignore_ascii_case(&b.name) && same_column(a, b));
        if !matches {
            bail!("table {name} already exists in the database with a different definition; rename one of them");
        }
        self.register_table(name, cols)?;
        // Existing rows become alive rows of an unknown first life: a clock with cl = 1 and no
        // cells, so they are not gossiped and any remote write to them merges normally.
        let mut pks: Vec<&Column> = cols.iter().filter(|c| c.pk > 0).collect();
        pks.sort_by_key(|c| c.pk);
        let keys = pks
            .iter()
            .map(|c| quote(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let empty = crate::crdt::clock::RowClock {
            cl: 1,
            row_stamp: None,
            cells: vec![],
        }
        .encode();
        self.conn.execute(
            &format!(
                "INSERT INTO {} ({keys}, clock) SELECT {keys}, ?1 FROM {}",
                quote(&clock_table(name)),
                quote(name)
            ),
            [empty],
        )?;
        Ok(())
    }
}

/// Paths helper for callers: does a schema path exist?
pub fn missing_paths(paths: &[PathBuf]) -> Vec<&Path> {
    paths
        .iter()
        .filter(|p| !p.exists())
        .map(|p| p.as_path())
        .collect()
}
