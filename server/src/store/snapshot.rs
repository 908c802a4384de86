//! Whole-database snapshots that bootstrap a fresh node.
//!
//! A node that holds no replicated data yet can take a peer's database instead of pulling
//! every version as individual changes: the peer copies its database pages into a file
//! ([`write`]), the file travels over a sync stream, and [`Store::import_snapshot`] copies the
//! replicated tables, their clocks and the version records into the empty database in one
//! transaction. Everything keeps its origin — clocks name origin sites, version records keep
//! their numbers — so afterwards the node serves those versions to others like any other
//! holder and syncs only what is newer than the snapshot.
//!
//! The import refuses (and the caller falls back to change-by-change sync) unless this node
//! still holds nothing and both databases have the same replicated tables with the same
//! columns in the same order: clocks name columns by position and version records name
//! tables by id. What the peer keeps for itself — its identity, members, partially received
//! versions, subscriptions — is never copied.

use super::catalog::{clock_table, quote};
use super::{capture, load_sites, Store, INTERNAL_SCHEMA_VERSION};
use anyhow::{bail, ensure, Context, Result};
use rusqlite::backup::StepResult;
use rusqlite::hooks::{Action, PreUpdateCase};
use rusqlite::{params, Connection};
use std::path::Path;
use std::time::Duration;

/// Schema name the snapshot is attached under during an import.
const ATTACHED: &str = "vd_snapshot";

/// Copies the database behind `src` into a new file `out` as one consistent snapshot (a page
/// copy under a single read transaction; writers on other connections are not blocked).
/// Returns the file's size in bytes.
pub fn write(src: &Connection, out: &Path) -> Result<u64> {
    if out.exists() {
        std::fs::remove_file(out).with_context(|| format!("removing stale {}", out.display()))?;
    }
    let mut dst =
        Connection::open(out).with_context(|| format!("creating snapshot {}", out.display()))?;
    {
        let backup = rusqlite::backup::Backup::new(src, &mut dst)?;
        // One step copies every page under one read transaction: a consistent snapshot.
        let mut tries = 0;
        loop {
            match backup.step(-1).context("copying database pages")? {
                StepResult::Done => break,
                StepResult::More => continue,
                StepResult::Busy | StepResult::Locked if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => bail!("the database stayed locked; try again later"),
            }
        }
    }
    // A self-contained file: no WAL needed to read it.
    dst.pragma_update(None, "journal_mode", "DELETE")?;
    drop(dst);
    Ok(std::fs::metadata(out)?.len())
}

/// What an import brought in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imported {
    /// Replicated tables (all of them, filled or not).
    pub tables: Vec<String>,
    /// Live rows copied into replicated tables (deleted rows live on in the clocks only).
    pub rows: u64,
    /// Version records copied.
    pub versions: u64,
}

type Columns = Vec<(String, String, bool, Option<String>, i64)>;

fn columns(conn: &Connection, schema: &str, table: &str) -> Result<Columns> {
    let mut stmt = conn.prepare(
        "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?1, ?2) ORDER BY cid",
    )?;
    let rows = stmt.query_map(params![table, schema], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn tables(conn: &Connection, schema: &str) -> Result<Vec<(i64, String)>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT id, name FROM {schema}.__vd_tables ORDER BY id"
    ))?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn has_rows(conn: &Connection, table: &str) -> Result<bool> {
    Ok(conn.query_row(
        &format!("SELECT EXISTS (SELECT 1 FROM main.{})", quote(table)),
        [],
        |r| r.get(0),
    )?)
}

impl Store {
    /// Whether this node holds no replicated data at all: it never committed a version and
    /// knows of no remote version, complete or partial. Cheap (in-memory state only).
    pub fn holds_nothing(&self) -> bool {
        self.local_max == 0 && self.shared.book.read().expect("book lock").holds_nothing()
    }

    /// Imports a snapshot file made by [`write`] on a peer; see the module docs. Runs as one
    /// transaction: on any error nothing is changed.
    pub fn import_snapshot(&mut self, file: &Path) -> Result<Imported> {
        let path = file.to_str().context("snapshot path must be valid UTF-8")?;
        self.conn
            .execute("ATTACH DATABASE ?1 AS vd_snapshot", [path])
            .with_context(|| format!("opening snapshot {}", file.display()))?;
        // The copy is not a local write: keep the capture hook out of it.
        self.conn
            .preupdate_hook(None::<fn(Action, &str, &str, &PreUpdateCase)>)?;
        let result = self.copy_attached();
        capture::install(&self.conn, self.capture.clone())?;
        let detached = self.conn.execute_batch("DETACH DATABASE vd_snapshot");
        let imported = result?;
        detached?;
        *self.shared.sites.write().expect("sites lock") = load_sites(&self.conn)?;
        let me = self.actor;
        self.local_site = self.site_ordinal(&me)?;
        self.local_max = self.max_version(self.local_site)?;
        self.load_bookkeeping()?;
        Ok(imported)
    }

    fn copy_attached(&mut self) -> Result<Imported> {
        let conn = &self.conn;
        let format: i64 = conn
            .query_row(
                &format!("SELECT value FROM {ATTACHED}.__vd_state WHERE key = 'schema_version'"),
                [],
                |r| r.get(0),
            )
            .context("the snapshot is not a Verdigris database")?;
        ensure!(
            format == INTERNAL_SCHEMA_VERSION,
            "the snapshot has internal schema {format}, this node {INTERNAL_SCHEMA_VERSION}"
        );
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let copied = (|| -> Result<Imported> {
            let held: i64 = conn.query_row(
                "SELECT (SELECT count(*) FROM main.__vd_versions) + (SELECT count(*) FROM main.__vd_partials) \
                 + (SELECT count(*) FROM main.__vd_buffer)",
                [],
                |r| r.get(0),
            )?;
            ensure!(held == 0, "this node already holds versions");
            let ours = tables(conn, "main")?;
            let theirs = tables(conn, ATTACHED)?;
            if ours != theirs {
                let names = |t: &[(i64, String)]| {
                    t.iter()
                        .map(|(i, n)| format!("{i}:{n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                bail!(
                    "replicated tables differ (here [{}], in the snapshot [{}])",
                    names(&ours),
                    names(&theirs)
                );
            }
            let mut imported = Imported::default();
            for (_, name) in &ours {
                let clock = clock_table(name);
                for t in [name, &clock] {
                    ensure!(
                        columns(conn, "main", t)? == columns(conn, ATTACHED, t)?,
                        "table {t} has different columns in the snapshot"
                    );
                    ensure!(!has_rows(conn, t)?, "table {t} already holds rows");
                }
                // `SELECT *` between identical tables lets SQLite copy records without
                // decoding them (its transfer optimization).
                imported.rows += conn.execute(
                    &format!(
                        "INSERT INTO main.{0} SELECT * FROM {ATTACHED}.{0}",
                        quote(name)
                    ),
                    [],
                )? as u64;
                conn.execute(
                    &format!(
                        "INSERT INTO main.{0} SELECT * FROM {ATTACHED}.{0}",
                        quote(&clock)
                    ),
                    [],
                )?;
                imported.tables.push(name.clone());
            }
            conn.execute("DELETE FROM main.__vd_sites", [])?;
            conn.execute(
                &format!("INSERT INTO main.__vd_sites SELECT * FROM {ATTACHED}.__vd_sites"),
                [],
            )?;
            conn.execute(
                "INSERT OR IGNORE INTO main.__vd_sites (actor) VALUES (?1)",
                [&self.actor.0[..]],
            )?;
            imported.versions = conn.execute(
                &format!("INSERT INTO main.__vd_versions SELECT * FROM {ATTACHED}.__vd_versions"),
                [],
            )? as u64;
            Ok(imported)
        })();
        match copied {
            Ok(imported) => {
                conn.execute_batch("COMMIT")?;
                Ok(imported)
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests;
