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
//! The import replaces the node's replicated data, so it refuses (and the caller falls back to
//! change-by-change sync) when the node has written anything itself — remote data can be
//! fetched again, its own writes could not. It also refuses unless both databases have the
//! same replicated tables with the same columns in the same order: clocks name columns by
//! position and version records name tables by id. What the peer keeps for itself — its
//! identity, members, partially received versions, subscriptions — is never copied.

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
    // One step copies every page under one read transaction: a consistent snapshot.
    copy_all_pages(src, &mut dst)?;
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
    /// Live rows in replicated tables (deleted rows live on in the clocks only).
    pub rows: u64,
    /// Version records.
    pub versions: u64,
    /// Whether the database pages were copied whole ([`Store::import_snapshot`]).
    pub whole_pages: bool,
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

/// Every schema object but SQLite's own, in a comparable order.
fn schema_objects(conn: &Connection, schema: &str) -> Result<Vec<[Option<String>; 4]>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT type, name, tbl_name, sql FROM {schema}.sqlite_schema \
         WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type, name"
    ))?;
    let rows = stmt.query_map([], |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?]))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn pragma_i64(conn: &Connection, schema: &str, name: &str) -> Result<i64> {
    Ok(conn.query_row(&format!("PRAGMA {schema}.{name}"), [], |r| r.get(0))?)
}

fn count(conn: &Connection, sql: &str) -> Result<u64> {
    Ok(conn.query_row(sql, [], |r| r.get::<_, i64>(0))? as u64)
}

impl Store {
    /// Whether this node holds no replicated data at all: it never committed a version and
    /// knows of no remote version, complete or partial. Cheap (in-memory state only).
    pub fn holds_nothing(&self) -> bool {
        self.local_max == 0 && self.shared.book.read().expect("book lock").holds_nothing()
    }

    /// Imports a snapshot file made by [`write`] on a peer (see the module docs), replacing
    /// this node's replicated data. When both databases have exactly the same schema the
    /// snapshot's pages are copied whole (with this node's identity and members written into
    /// it first); otherwise the replicated tables, clocks and version records are copied row
    /// by row. Either way it is one transaction: on any error nothing is changed.
    pub fn import_snapshot(&mut self, file: &Path) -> Result<Imported> {
        let path = file.to_str().context("snapshot path must be valid UTF-8")?;
        self.conn
            .execute("ATTACH DATABASE ?1 AS vd_snapshot", [path])
            .with_context(|| format!("opening snapshot {}", file.display()))?;
        let imported = match self.plan() {
            Ok(plan) if plan.whole_pages => {
                self.conn.execute_batch("DETACH DATABASE vd_snapshot")?;
                self.copy_pages(file)?;
                plan
            }
            Ok(plan) => {
                // The copy is not a local write: keep the capture hook out of it.
                self.conn
                    .preupdate_hook(None::<fn(Action, &str, &str, &PreUpdateCase)>)?;
                let copied = self.copy_rows(&plan.tables);
                capture::install(&self.conn, self.capture.clone())?;
                self.conn.execute_batch("DETACH DATABASE vd_snapshot")?;
                copied?;
                plan
            }
            Err(e) => {
                let _ = self.conn.execute_batch("DETACH DATABASE vd_snapshot");
                return Err(e);
            }
        };
        *self.shared.sites.write().expect("sites lock") = load_sites(&self.conn)?;
        let me = self.actor;
        self.local_site = self.site_ordinal(&me)?;
        self.local_max = self.max_version(self.local_site)?;
        // Rebuilt from the imported tables alone: versions held before the import but absent
        // from the snapshot read as missing.
        self.load_bookkeeping()?;
        Ok(imported)
    }

    /// Checks that the attached snapshot may replace this node's data, and decides how: whole
    /// pages when both schemas are identical and nothing of this node's own would be lost (its
    /// tables outside the replicated set are empty).
    fn plan(&self) -> Result<Imported> {
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
        let own: i64 = conn.query_row(
            "SELECT count(*) FROM main.__vd_versions WHERE site = ?1",
            [self.local_site],
            |r| r.get(0),
        )?;
        ensure!(
            own == 0 && self.local_max == 0,
            "this node already holds writes of its own, which a snapshot would replace"
        );
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
            for t in [name.clone(), clock_table(name)] {
                ensure!(
                    columns(conn, "main", &t)? == columns(conn, ATTACHED, &t)?,
                    "table {t} has different columns in the snapshot"
                );
            }
            imported.rows += count(
                conn,
                &format!("SELECT count(*) FROM {ATTACHED}.{}", quote(name)),
            )?;
            imported.tables.push(name.clone());
        }
        imported.versions = count(
            conn,
            &format!("SELECT count(*) FROM {ATTACHED}.__vd_versions"),
        )?;
        let catalog = self.shared.catalog();
        let mut own_data = false;
        let our_schema = schema_objects(conn, "main")?;
        for obj in &our_schema {
            let (Some(kind), Some(name)) = (&obj[0], &obj[1]) else {
                continue;
            };
            let internal = name.starts_with("__vd_") || name.ends_with("__vd_clock");
            if kind == "table" && !internal && catalog.get(name).is_none() {
                own_data |= count(
                    conn,
                    &format!("SELECT EXISTS (SELECT 1 FROM main.{})", quote(name)),
                )? > 0;
            }
        }
        imported.whole_pages = !own_data
            && our_schema == schema_objects(conn, ATTACHED)?
            && pragma_i64(conn, "main", "page_size")? == pragma_i64(conn, ATTACHED, "page_size")?;
        Ok(imported)
    }

    /// Makes the snapshot file this node's (identity, members, own site) and copies its pages
    /// over the database in one write transaction.
    fn copy_pages(&mut self, file: &Path) -> Result<()> {
        let snap = Connection::open(file)?;
        // A scratch copy: no journal, no syncing.
        snap.pragma_update(None, "journal_mode", "OFF")?;
        snap.pragma_update(None, "synchronous", "OFF")?;
        let members: Vec<(Vec<u8>, String, String, i64)> = {
            let mut stmt = self
                .conn
                .prepare("SELECT actor, address, state, updated_at FROM main.__vd_members")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        snap.execute_batch("BEGIN")?;
        snap.execute(
            "INSERT OR REPLACE INTO __vd_state (key, value) VALUES ('actor_id', ?1)",
            [&self.actor.0[..]],
        )?;
        snap.execute("DELETE FROM __vd_members", [])?;
        for (actor, address, state, at) in &members {
            snap.execute(
                "INSERT INTO __vd_members (actor, address, state, updated_at) VALUES (?1, ?2, ?3, ?4)",
                params![actor, address, state, at],
            )?;
        }
        snap.execute(
            "INSERT OR IGNORE INTO __vd_sites (actor) VALUES (?1)",
            [&self.actor.0[..]],
        )?;
        snap.execute_batch("COMMIT")?;
        copy_all_pages(&snap, &mut self.conn)
    }

    /// Replaces the replicated tables, clocks, sites and version records with the attached
    /// snapshot's, row by row, in one transaction.
    fn copy_rows(&mut self, tables: &[String]) -> Result<()> {
        let conn = &self.conn;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let copied = (|| -> Result<()> {
            for name in tables {
                for t in [name.clone(), clock_table(name)] {
                    // Remote data only (checked by `plan`): peers hold all of it.
                    conn.execute(&format!("DELETE FROM main.{}", quote(&t)), [])?;
                    // `SELECT *` between identical tables lets SQLite copy records without
                    // decoding them (its transfer optimization).
                    conn.execute(
                        &format!(
                            "INSERT INTO main.{0} SELECT * FROM {ATTACHED}.{0}",
                            quote(&t)
                        ),
                        [],
                    )?;
                }
            }
            conn.execute_batch(
                "DELETE FROM main.__vd_versions; DELETE FROM main.__vd_partials; \
                 DELETE FROM main.__vd_buffer; DELETE FROM main.__vd_sites;",
            )?;
            conn.execute(
                &format!("INSERT INTO main.__vd_sites SELECT * FROM {ATTACHED}.__vd_sites"),
                [],
            )?;
            conn.execute(
                "INSERT OR IGNORE INTO main.__vd_sites (actor) VALUES (?1)",
                [&self.actor.0[..]],
            )?;
            conn.execute(
                &format!("INSERT INTO main.__vd_versions SELECT * FROM {ATTACHED}.__vd_versions"),
                [],
            )?;
            Ok(())
        })();
        match copied {
            Ok(()) => Ok(conn.execute_batch("COMMIT")?),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

/// Copies every page of `src` over `dst` as one transaction (SQLite's backup API).
fn copy_all_pages(src: &Connection, dst: &mut Connection) -> Result<()> {
    let backup = rusqlite::backup::Backup::new(src, dst)?;
    let mut tries = 0;
    loop {
        match backup.step(-1).context("copying database pages")? {
            StepResult::Done => return Ok(()),
            StepResult::More => continue,
            StepResult::Busy | StepResult::Locked if tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => bail!("the database stayed locked; try again later"),
        }
    }
}

#[cfg(test)]
mod tests;
