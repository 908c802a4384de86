//! `verdigris backup` and `verdigris restore`.
//!
//! A backup is a consistent online snapshot (`VACUUM INTO`) made actor-neutral: the node's
//! identity and its member list are removed, so whatever node restores it gets its own
//! identity (or one chosen explicitly) and rejoins as a normal member that already holds the
//! snapshot's history. [`periodic`] writes the same snapshots on a schedule.

pub mod periodic;

use crate::crdt::ActorId;
use crate::node::lock_database;
use anyhow::{bail, Context, Result};
use rusqlite::{Connection, OpenFlags};
use std::path::Path;

pub fn backup(db: &Path, out: &Path) -> Result<()> {
    if out.exists() {
        bail!(
            "{} already exists; choose a new file name or remove it first",
            out.display()
        );
    }
    snapshot_to(db, out)
}

/// Writes an actor-neutral snapshot of `db` to `out` (which must not exist) from a read-only
/// connection: writers are not blocked while it is written.
pub fn snapshot_to(db: &Path, out: &Path) -> Result<()> {
    if !db.exists() {
        bail!("database {} does not exist (check db.path)", db.display());
    }
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {}", db.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    let out_str = out.to_str().context("backup path must be valid UTF-8")?;
    conn.execute("VACUUM INTO ?1", [out_str])
        .with_context(|| format!("writing snapshot to {}", out.display()))?;
    let snap = Connection::open(out)?;
    snap.execute_batch("DELETE FROM __vd_state WHERE key = 'actor_id'; DELETE FROM __vd_members;")
        .context("making the snapshot actor-neutral (is this a Verdigris database?)")?;
    Ok(())
}

/// Which identity the restored node takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreIdentity {
    /// A fresh actor id (the safe default: versions are never reused).
    Fresh,
    /// Keep the identity of the database being replaced.
    KeepCurrent,
    Given(ActorId),
}

pub fn restore(
    db: &Path,
    snapshot: &Path,
    identity: RestoreIdentity,
    subscriptions_dir: &Path,
) -> Result<()> {
    let _lock = lock_database(db)
        .context("refusing to restore while a node runs on this database; stop it first")?;
    let snap = Connection::open_with_flags(snapshot, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening snapshot {}", snapshot.display()))?;
    let ok: String = snap
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .context("checking the snapshot")?;
    if ok != "ok" {
        bail!("snapshot {} is corrupt: {ok}", snapshot.display());
    }
    snap.query_row(
        "SELECT value FROM __vd_state WHERE key = 'schema_version'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .with_context(|| format!("{} is not a Verdigris backup", snapshot.display()))?;
    drop(snap);
    let actor = match identity {
        RestoreIdentity::Fresh => None,
        RestoreIdentity::Given(a) => Some(a),
        RestoreIdentity::KeepCurrent => {
            let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .with_context(|| format!("opening {} to read its identity", db.display()))?;
            let bytes: Vec<u8> = conn
                .query_row(
                    "SELECT value FROM __vd_state WHERE key = 'actor_id'",
                    [],
                    |r| r.get(0),
                )
                .context("the current database has no identity to keep")?;
            Some(ActorId::from_slice(&bytes).context("corrupt actor id")?)
        }
    };
    let mut tmp = db.as_os_str().to_owned();
    tmp.push(".restore-tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::copy(snapshot, &tmp)
        .with_context(|| format!("copying {} to {}", snapshot.display(), tmp.display()))?;
    {
        let c = Connection::open(&tmp)?;
        c.execute("DELETE FROM __vd_state WHERE key = 'actor_id'", [])?;
        if let Some(a) = actor {
            c.execute(
                "INSERT INTO __vd_state (key, value) VALUES ('actor_id', ?1)",
                [&a.0[..]],
            )?;
        }
    }
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(crate::store::db_sibling(db, suffix));
    }
    std::fs::rename(&tmp, db).with_context(|| format!("replacing {}", db.display()))?;
    if subscriptions_dir.exists() {
        std::fs::remove_dir_all(subscriptions_dir).with_context(|| {
            format!("removing subscriptions in {}", subscriptions_dir.display())
        })?;
    }
    Ok(())
}
