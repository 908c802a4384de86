//! Ingesting replicated changes that may arrive in pieces.
//!
//! A version travels as one or more [`Chunk`]s, each carrying a seq range; a chunk covering
//! `0..=last_seq` is complete and applied directly. Other chunks are buffered in
//! `__vd_buffer` (rows) and `__vd_partials` (seq ranges seen), and the version is applied
//! atomically, from the buffer, once its seqs are all there. Everything a call to
//! [`Store::ingest`] does happens in one transaction; the in-memory bookkeeping
//! ([`super::bookkeeping`]) is updated after COMMIT.

use super::apply::{ApplyReport, ChangeSet};
use super::bookkeeping::{Booked, RangeSet};
use super::feed::{Change, VersionChanges};
use super::{Shared, Store};
use crate::crdt::ActorId;
use anyhow::{Context, Result};
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::ops::RangeInclusive;

/// Largest `last_seq` accepted from a peer: bounds bookkeeping and buffering per version.
pub const MAX_LAST_SEQ: u64 = 50_000_000;
/// Partially received versions kept per actor; chunks of further versions are dropped (sync
/// asks for them again later).
pub const MAX_PARTIALS_PER_ACTOR: usize = 10_000;

/// A piece of one version of one origin actor.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub actor: ActorId,
    pub version: u64,
    pub last_seq: u64,
    pub ts: u64,
    /// The seqs this chunk accounts for (changes inside it that were cleared are absent).
    pub seqs: RangeInclusive<u64>,
    /// Changes of this version with seqs inside `seqs`, in seq order.
    pub changes: Vec<Change>,
}

impl Chunk {
    pub fn is_complete(&self) -> bool {
        *self.seqs.start() == 0 && *self.seqs.end() >= self.last_seq
    }

    /// Structural validity of a chunk received from a peer.
    pub fn is_valid(&self) -> bool {
        self.version >= 1
            && self.last_seq <= MAX_LAST_SEQ
            && self.seqs.start() <= self.seqs.end()
            && *self.seqs.end() <= self.last_seq
            && self.changes.iter().all(|c| {
                self.seqs.contains(&c.seq)
                    && c.site_id == self.actor
                    && c.db_version == self.version
            })
    }
}

/// What [`Store::ingest`] did.
#[derive(Debug, Default, Clone)]
pub struct IngestReport {
    pub apply: ApplyReport,
    /// Chunks buffered as parts of incomplete versions.
    pub buffered: usize,
    /// Chunks dropped as already known, ours, invalid or over the partials limit.
    pub dropped: usize,
    /// Timestamps (NTP64) of the versions applied, for lag metrics.
    pub applied_ts: Vec<u64>,
}

fn encode_seqs(s: &RangeSet) -> Vec<u8> {
    let mut out = Vec::new();
    for (a, b) in s.iter() {
        crate::cluster::wire::put_varint(&mut out, a);
        crate::cluster::wire::put_varint(&mut out, b);
    }
    out
}

fn decode_seqs(mut b: &[u8]) -> Option<RangeSet> {
    let mut s = RangeSet::new();
    while !b.is_empty() {
        let x = crate::cluster::wire::get_varint(&mut b).ok()?;
        let y = crate::cluster::wire::get_varint(&mut b).ok()?;
        s.insert(x, y);
    }
    Some(s)
}

impl Store {
    /// Replaces the in-memory bookkeeping with what `__vd_versions` and `__vd_partials` record
    /// (nothing held only in memory survives).
    pub(crate) fn load_bookkeeping(&mut self) -> Result<()> {
        let from_db = read_bookkeeping(&self.conn, &self.shared)?;
        let mut book = self.shared.book.write().expect("book lock");
        *book = Default::default();
        for (actor, booked) in from_db {
            *book.entry(actor) = booked;
        }
        book.entry(self.actor);
        Ok(())
    }

    /// Replaces the in-memory bookkeeping with what the database records (`verdigris sync
    /// reconcile-gaps`); returns the missing-version counts before and after.
    pub fn reconcile_bookkeeping(&mut self) -> Result<(u64, u64)> {
        let before = self.shared.book.read().expect("book lock").gap_count();
        self.load_bookkeeping()?;
        let after = self.shared.book.read().expect("book lock").gap_count();
        Ok((before, after))
    }

    /// Applies complete chunks and buffers partial ones, in one transaction. Versions that
    /// become complete are applied from the buffer in the same transaction.
    pub fn ingest(&mut self, chunks: Vec<Chunk>) -> Result<IngestReport> {
        let mut report = IngestReport::default();
        // Work on a copy of the affected actors' bookkeeping; published after COMMIT.
        let mut book: HashMap<ActorId, Booked> = HashMap::new();
        let mut sets: Vec<ChangeSet> = Vec::new();
        let mut from_buffer: Vec<(u32, u64)> = Vec::new();
        let before = chunks.len();
        let chunks: Vec<Chunk> = chunks
            .into_iter()
            .filter(|c| c.actor != self.actor && c.is_valid())
            .collect();
        report.dropped += before - chunks.len();
        let chunks = super::assemble::assemble(chunks);
        super::run_cached(&self.conn, "BEGIN IMMEDIATE")?;
        let images = self.begin_images();
        let result = (|| -> Result<()> {
            for c in chunks {
                let booked = book.entry(c.actor).or_insert_with(|| {
                    let shared = self.shared.book.read().expect("book lock");
                    shared.get(&c.actor).cloned().unwrap_or_default()
                });
                if booked.has_seqs(c.version, *c.seqs.start(), *c.seqs.end())
                    || sets
                        .iter()
                        .any(|s| s.actor == c.actor && s.version == c.version)
                {
                    report.dropped += 1;
                    continue;
                }
                if c.is_complete() {
                    if booked.partials.contains_key(&c.version) {
                        // Pieces buffered earlier are superseded by this whole copy.
                        from_buffer.push((self.site_ordinal(&c.actor)?, c.version));
                    }
                    report.applied_ts.push(c.ts);
                    sets.push(ChangeSet {
                        actor: c.actor,
                        version: c.version,
                        last_seq: c.last_seq,
                        ts: c.ts,
                        changes: c.changes,
                    });
                    continue;
                }
                if !booked.partials.contains_key(&c.version)
                    && booked.partials.len() >= MAX_PARTIALS_PER_ACTOR
                {
                    report.dropped += 1;
                    continue;
                }
                let site = self.site_ordinal(&c.actor)?;
                let (a, b) = (*c.seqs.start(), *c.seqs.end());
                let complete = booked.record_partial(c.version, a, b, c.last_seq, c.ts);
                report.buffered += 1;
                self.buffer_changes(site, c.version, &c.changes)?;
                let p = &booked.partials[&c.version];
                self.conn
                    .prepare_cached(
                        "INSERT OR REPLACE INTO __vd_partials (site, db_version, last_seq, ts, seqs) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![site, c.version, p.last_seq, p.ts as i64, encode_seqs(&p.seqs)])?;
                if complete {
                    report.applied_ts.push(p.ts);
                    let set = self.read_buffered(c.actor, site, c.version, p.last_seq, p.ts)?;
                    sets.push(set);
                    from_buffer.push((site, c.version));
                }
            }
            self.apply_sets_in_tx(&sets, &mut report.apply)?;
            // Completed (applied or failed) versions leave the buffer; a failed one is forgotten
            // entirely so that sync asks for it again.
            for (site, v) in &from_buffer {
                self.conn
                    .prepare_cached("DELETE FROM __vd_buffer WHERE site = ?1 AND db_version = ?2")?
                    .execute(params![site, v])?;
                self.conn
                    .prepare_cached(
                        "DELETE FROM __vd_partials WHERE site = ?1 AND db_version = ?2",
                    )?
                    .execute(params![site, v])?;
            }
            Ok(())
        })();
        // The before-images are read inside the transaction (rows whose base row was not
        // written are read as they are); then COMMIT and notify under the commit gate (see
        // `Shared::commit_gate`).
        let result = result.map(|_| self.take_images(&images, &report.apply.impacted));
        let shared = self.shared.clone();
        let mut gate = shared.commit_gate.lock().unwrap_or_else(|e| e.into_inner());
        let result = result.and_then(|before| {
            super::run_cached(&self.conn, "COMMIT")?;
            Ok(before)
        });
        let before = match result {
            Ok(before) => before,
            Err(e) => {
                drop(gate);
                self.drop_images();
                if let Err(e2) = self.conn.execute_batch("ROLLBACK") {
                    tracing::debug!(error = %e2, "rollback after a failed apply (nothing open)");
                }
                return Err(e);
            }
        };
        {
            let mut shared = self.shared.book.write().expect("book lock");
            for (actor, mut booked) in book {
                for (a, v, _) in &report.apply.failed {
                    if *a == actor {
                        booked.partials.remove(v);
                        if *v <= booked.max {
                            booked.needed.insert(*v, *v);
                        }
                    }
                }
                *shared.entry(actor) = booked;
            }
        }
        *gate += 1;
        self.notify_commit(super::Committed {
            versions: report.apply.applied.clone(),
            local: false,
            changed: report.apply.impacted.clone(),
            seq: *gate,
            before,
            imaged: images,
        });
        drop(gate);
        Ok(report)
    }

    fn buffer_changes(&mut self, site: u32, version: u64, changes: &[Change]) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT OR IGNORE INTO __vd_buffer (site, db_version, seq, tbl, pk, cid, val, col_version, cl) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for c in changes {
            stmt.execute(params![
                site,
                version,
                c.seq,
                c.table,
                c.pk,
                c.cid,
                c.val,
                c.col_version,
                c.cl
            ])?;
        }
        Ok(())
    }

    fn read_buffered(
        &self,
        actor: ActorId,
        site: u32,
        version: u64,
        last_seq: u64,
        ts: u64,
    ) -> Result<ChangeSet> {
        Ok(ChangeSet {
            actor,
            version,
            last_seq,
            ts,
            changes: self.buffered_changes(actor, site, version, 0..=last_seq)?,
        })
    }

    /// Buffered changes of a partial version within `seqs`, in seq order.
    pub fn buffered_changes(
        &self,
        actor: ActorId,
        site: u32,
        version: u64,
        seqs: RangeInclusive<u64>,
    ) -> Result<Vec<Change>> {
        read_buffered(&self.conn, actor, site, version, seqs)
    }
}

/// The bookkeeping the database records: known (applied or cleared) versions are the rows of
/// `__vd_versions`, partial ones those of `__vd_partials`.
pub fn read_bookkeeping(conn: &Connection, shared: &Shared) -> Result<HashMap<ActorId, Booked>> {
    let sites: HashMap<u32, ActorId> = shared.sites.read().expect("sites lock").all().collect();
    let mut per_site: HashMap<u32, Booked> = HashMap::new();
    {
        let mut stmt =
            conn.prepare("SELECT site, db_version FROM __vd_versions ORDER BY site, db_version")?;
        let mut rows = stmt.query([])?;
        let mut run: Option<(u32, u64, u64)> = None;
        while let Some(r) = rows.next()? {
            let (site, v): (u32, u64) = (r.get(0)?, r.get(1)?);
            run = match run {
                Some((s, a, b)) if s == site && b + 1 == v => Some((s, a, v)),
                Some((s, a, b)) => {
                    per_site.entry(s).or_default().record_known(a, b);
                    Some((site, v, v))
                }
                None => Some((site, v, v)),
            };
        }
        if let Some((s, a, b)) = run {
            per_site.entry(s).or_default().record_known(a, b);
        }
    }
    let mut stmt =
        conn.prepare("SELECT site, db_version, last_seq, ts, seqs FROM __vd_partials")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let seqs = decode_seqs(&r.get::<_, Vec<u8>>(4)?).context("corrupt __vd_partials")?;
        let b = per_site.entry(r.get(0)?).or_default();
        let (v, last_seq, ts): (u64, u64, i64) = (r.get(1)?, r.get(2)?, r.get(3)?);
        for (x, y) in seqs.iter() {
            b.record_partial(v, x, y, last_seq, ts as u64);
        }
    }
    Ok(per_site
        .into_iter()
        .filter_map(|(site, booked)| sites.get(&site).map(|a| (*a, booked)))
        .collect())
}

fn read_buffered(
    conn: &Connection,
    actor: ActorId,
    site: u32,
    version: u64,
    seqs: RangeInclusive<u64>,
) -> Result<Vec<Change>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, tbl, pk, cid, val, col_version, cl FROM __vd_buffer WHERE site = ?1 AND db_version = ?2 AND seq BETWEEN ?3 AND ?4 ORDER BY seq",
    )?;
    let rows = stmt.query_map(params![site, version, seqs.start(), seqs.end()], |r| {
        Ok(Change {
            seq: r.get(0)?,
            table: r.get(1)?,
            pk: r.get::<_, Vec<u8>>(2)?.into(),
            cid: r.get(3)?,
            val: r.get::<_, Value>(4)?,
            col_version: r.get(5)?,
            cl: r.get(6)?,
            db_version: version,
            site_id: actor,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// The pieces of a version this node holds only partially that fall within `wanted` (seq
/// ranges): one per seq range it accounts for, with the buffered changes inside it, so a
/// peer missing the same version can complete it from several partial holders. Empty when
/// the version is not (or no longer) partial here.
///
/// The seq ranges and the changes are read in one read transaction: a piece must never claim
/// a seq range whose changes it does not carry (the receiver would take them as cleared).
pub fn partial_pieces(
    conn: &Connection,
    shared: &Shared,
    actor: ActorId,
    version: u64,
    wanted: &[(u64, u64)],
) -> Result<Vec<(RangeInclusive<u64>, VersionChanges)>> {
    let Some(site) = shared.sites.read().expect("sites lock").ordinal(&actor) else {
        return Ok(vec![]);
    };
    let tx = conn.unchecked_transaction()?;
    let held = tx
        .prepare_cached(
            "SELECT last_seq, ts, seqs FROM __vd_partials WHERE site = ?1 AND db_version = ?2",
        )?
        .query_row(params![site, version], |r| {
            Ok((
                r.get::<_, u64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })
        .optional()?;
    let Some((last_seq, ts, seqs)) = held else {
        return Ok(vec![]);
    };
    let seqs = decode_seqs(&seqs).context("corrupt __vd_partials")?;
    let mut out = Vec::new();
    for &(a, b) in wanted {
        for (x, y) in seqs.present_in(a, b.min(last_seq)) {
            let changes = read_buffered(&tx, actor, site, version, x..=y)?;
            out.push((
                x..=y,
                VersionChanges {
                    actor,
                    version,
                    last_seq,
                    ts: ts as u64,
                    changes,
                },
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "buffer_tests.rs"]
mod tests;
