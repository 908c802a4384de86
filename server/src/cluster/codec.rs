//! Peer messages and their versioned encoding (see [`super::wire`] for the field format).
//!
//! Every datagram and every stream frame is one envelope: a format-version byte (currently
//! 1), then fields: 1 = cluster id, and exactly one message field whose tag names the kind.
//! A message of an unknown kind decodes as [`Msg::Unknown`] (ignored), so a newer node can
//! introduce messages that older nodes skip. Stream frames are `u32` big-endian length +
//! envelope, at most [`MAX_FRAME`] bytes.

use super::sync_state::{ActorState, Need, SyncState};
use super::wire::{DResult, DecodeError, Field, Reader, Writer};
use crate::crdt::ActorId;
use crate::store::buffer::Chunk;
use crate::store::feed::Change;
use rusqlite::types::Value;
use std::sync::Arc;

pub const FORMAT_VERSION: u8 = 1;
/// Largest stream frame accepted.
pub const MAX_FRAME: usize = 8 * 1024 * 1024;
const MAX_NAME: usize = 4096;
const MAX_PK: usize = 64 * 1024;
const MAX_TABLES: usize = 4096;
const MAX_ACTORS: usize = 100_000;
const MAX_NEEDS: usize = 100_000;

/// A peer message.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    /// A SWIM (foca) packet.
    Swim(Vec<u8>),
    /// A broadcast piece of a version; `ttl` = how many more hops may re-broadcast it.
    Change {
        chunk: Chunk,
        ttl: u8,
    },
    /// Opens a sync session.
    SyncStart {
        actor: ActorId,
    },
    SyncState(SyncState),
    SyncRequest(Vec<Need>),
    /// A piece of a version sent in answer to a sync request.
    SyncChunk(Chunk),
    /// The server finished answering.
    SyncDone,
    /// The server refuses the session (busy, …).
    Reject(String),
    /// Instead of a [`Msg::SyncRequest`]: a node that holds nothing asks for a whole-database
    /// snapshot.
    SnapshotRequest,
    /// The snapshot follows: its size in bytes, then [`Msg::SnapshotData`] frames and
    /// [`Msg::SyncDone`].
    SnapshotBegin {
        bytes: u64,
    },
    /// The next piece of the snapshot file.
    SnapshotData(Vec<u8>),
    /// An origin's latest version, sent to every member (as a datagram) once its writes
    /// pause: a node that missed the last versions learns it is behind without polling.
    Head {
        actor: ActorId,
        /// The origin's gossip address (to sync with).
        addr: std::net::SocketAddr,
        version: u64,
    },
    /// A message kind this version does not know.
    Unknown(u32),
}

mod tag {
    pub const CLUSTER: u32 = 1;
    pub const SWIM: u32 = 2;
    pub const CHANGE: u32 = 3;
    pub const SYNC_START: u32 = 4;
    pub const SYNC_STATE: u32 = 5;
    pub const SYNC_REQUEST: u32 = 6;
    pub const SYNC_CHUNK: u32 = 7;
    pub const SYNC_DONE: u32 = 8;
    pub const REJECT: u32 = 9;
    pub const SNAPSHOT_REQUEST: u32 = 10;
    pub const SNAPSHOT_BEGIN: u32 = 11;
    pub const SNAPSHOT_DATA: u32 = 12;
    pub const HEAD: u32 = 13;
}

/// Encodes `msg` as an envelope for cluster `cluster_id`.
pub fn encode(msg: &Msg, cluster_id: u16) -> Vec<u8> {
    let mut w = Writer::new();
    w.buf.push(FORMAT_VERSION);
    w.u64(tag::CLUSTER, u64::from(cluster_id));
    match msg {
        Msg::Swim(b) => {
            w.bytes(tag::SWIM, b);
        }
        Msg::Change { chunk, ttl } => {
            w.msg(tag::CHANGE, |m| {
                m.u64(1, u64::from(*ttl));
                m.msg(2, |c| put_chunk(c, chunk));
            });
        }
        Msg::SyncStart { actor } => {
            w.msg(tag::SYNC_START, |m| {
                m.bytes(1, &actor.0);
            });
        }
        Msg::SyncState(s) => {
            w.msg(tag::SYNC_STATE, |m| put_state(m, s));
        }
        Msg::SyncRequest(needs) => {
            w.msg(tag::SYNC_REQUEST, |m| {
                for n in needs {
                    put_need(m, n);
                }
            });
        }
        Msg::SyncChunk(c) => {
            w.msg(tag::SYNC_CHUNK, |m| put_chunk(m, c));
        }
        Msg::SyncDone => {
            w.bytes(tag::SYNC_DONE, &[]);
        }
        Msg::Reject(why) => {
            w.str(tag::REJECT, why);
        }
        Msg::SnapshotRequest => {
            w.bytes(tag::SNAPSHOT_REQUEST, &[]);
        }
        Msg::SnapshotBegin { bytes } => {
            w.msg(tag::SNAPSHOT_BEGIN, |m| {
                m.u64(1, *bytes);
            });
        }
        Msg::SnapshotData(b) => {
            w.bytes(tag::SNAPSHOT_DATA, b);
        }
        Msg::Head {
            actor,
            addr,
            version,
        } => {
            w.msg(tag::HEAD, |m| {
                m.bytes(1, &actor.0);
                m.str(2, &addr.to_string());
                m.u64(3, *version);
            });
        }
        Msg::Unknown(t) => {
            w.bytes(*t, &[]);
        }
    }
    w.finish()
}

/// Decodes an envelope, rejecting other format versions and other clusters.
pub fn decode(buf: &[u8], cluster_id: u16) -> DResult<Msg> {
    let (&version, rest) = buf.split_first().ok_or(DecodeError::Truncated)?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::Version(version));
    }
    let mut r = Reader::new(rest);
    let mut cluster = None;
    let mut msg = None;
    let mut unknown = None;
    while let Some((t, f)) = r.next_field()? {
        let m = match t {
            tag::CLUSTER => {
                cluster = Some(f.u16("cluster id")?);
                continue;
            }
            tag::SWIM => Msg::Swim(f.bytes_max("swim packet", MAX_FRAME)?.to_vec()),
            tag::CHANGE => {
                let mut r = f.reader("change")?;
                let (mut ttl, mut chunk) = (0u8, None);
                while let Some((t, f)) = r.next_field()? {
                    match t {
                        1 => ttl = f.u64("ttl")?.min(255) as u8,
                        2 => chunk = Some(get_chunk(f)?),
                        _ => {}
                    }
                }
                Msg::Change {
                    chunk: chunk.ok_or(DecodeError::Missing("chunk"))?,
                    ttl,
                }
            }
            tag::SYNC_START => {
                let mut r = f.reader("sync start")?;
                let mut actor = None;
                while let Some((t, f)) = r.next_field()? {
                    if t == 1 {
                        actor = Some(get_actor(f)?);
                    }
                }
                Msg::SyncStart {
                    actor: actor.ok_or(DecodeError::Missing("actor"))?,
                }
            }
            tag::SYNC_STATE => Msg::SyncState(get_state(f)?),
            tag::SYNC_REQUEST => Msg::SyncRequest(get_needs(f)?),
            tag::SYNC_CHUNK => Msg::SyncChunk(get_chunk(f)?),
            tag::SYNC_DONE => Msg::SyncDone,
            tag::REJECT => Msg::Reject(f.str("reason", MAX_NAME)?.to_string()),
            tag::SNAPSHOT_REQUEST => Msg::SnapshotRequest,
            tag::SNAPSHOT_BEGIN => {
                let mut r = f.reader("snapshot begin")?;
                let mut bytes = None;
                while let Some((t, f)) = r.next_field()? {
                    if t == 1 {
                        bytes = Some(f.u64("snapshot size")?);
                    }
                }
                Msg::SnapshotBegin {
                    bytes: bytes.ok_or(DecodeError::Missing("snapshot size"))?,
                }
            }
            tag::SNAPSHOT_DATA => {
                Msg::SnapshotData(f.bytes_max("snapshot data", MAX_FRAME)?.to_vec())
            }
            tag::HEAD => {
                let mut r = f.reader("head")?;
                let (mut actor, mut addr, mut version) = (None, None, None);
                while let Some((t, f)) = r.next_field()? {
                    match t {
                        1 => actor = Some(get_actor(f)?),
                        2 => {
                            let text = f.str("head address", MAX_NAME)?;
                            addr = Some(
                                text.parse()
                                    .map_err(|_| DecodeError::Invalid("head address"))?,
                            );
                        }
                        3 => version = Some(f.u64("head version")?),
                        _ => {}
                    }
                }
                Msg::Head {
                    actor: actor.ok_or(DecodeError::Missing("actor"))?,
                    addr: addr.ok_or(DecodeError::Missing("head address"))?,
                    version: version.ok_or(DecodeError::Missing("head version"))?,
                }
            }
            // An envelope field or message kind from a newer version.
            other => {
                unknown.get_or_insert(other);
                continue;
            }
        };
        msg.get_or_insert(m);
    }
    let theirs = cluster.ok_or(DecodeError::Missing("cluster id"))?;
    if theirs != cluster_id {
        return Err(DecodeError::WrongCluster {
            ours: cluster_id,
            theirs,
        });
    }
    msg.or(unknown.map(Msg::Unknown))
        .ok_or(DecodeError::Missing("message"))
}

fn get_actor(f: Field<'_>) -> DResult<ActorId> {
    ActorId::from_slice(f.bytes("actor id")?).ok_or(DecodeError::Invalid("actor id"))
}

fn put_range(w: &mut Writer, tag: u32, (a, b): (u64, u64)) {
    w.msg(tag, |m| {
        m.u64(1, a).u64(2, b);
    });
}

fn get_range(f: Field<'_>) -> DResult<(u64, u64)> {
    let mut r = f.reader("range")?;
    let (mut a, mut b) = (0, 0);
    while let Some((t, f)) = r.next_field()? {
        match t {
            1 => a = f.u64("range start")?,
            2 => b = f.u64("range end")?,
            _ => {}
        }
    }
    if a > b {
        return Err(DecodeError::Invalid("range"));
    }
    Ok((a, b))
}

/// Estimated encoded size of one change (for chunking).
pub fn change_size(c: &Change) -> usize {
    let val = match &c.val {
        Value::Null => 0,
        Value::Integer(_) | Value::Real(_) => 10,
        Value::Text(t) => t.len() + 4,
        Value::Blob(b) => b.len() + 4,
    };
    c.pk.len() + c.cid.len() + val + 24
}

fn put_chunk(w: &mut Writer, c: &Chunk) {
    w.bytes(1, &c.actor.0)
        .u64(2, c.version)
        .u64(3, c.last_seq)
        .u64(4, c.ts)
        .u64(5, *c.seqs.start())
        .u64(6, *c.seqs.end());
    let mut tables: Vec<&str> = Vec::new();
    for ch in &c.changes {
        if !tables.contains(&&*ch.table) {
            tables.push(&ch.table);
        }
    }
    for t in &tables {
        w.str(7, t);
    }
    let mut scratch = Writer::new();
    for ch in &c.changes {
        let ti = tables.iter().position(|t| *t == &*ch.table).unwrap_or(0);
        w.msg_in(8, &mut scratch, |m| {
            m.u64(1, ti as u64)
                .bytes(2, &ch.pk)
                .str(3, &ch.cid)
                .i64(4, ch.col_version)
                .u64(5, ch.seq)
                .i64(6, ch.cl);
            match &ch.val {
                Value::Null => m.u64(10, 0),
                Value::Integer(i) => m.i64(11, *i),
                Value::Real(f) => m.f64(12, *f),
                Value::Text(s) => m.str(13, s),
                Value::Blob(b) => m.bytes(14, b),
            };
        });
    }
}

fn get_chunk(f: Field<'_>) -> DResult<Chunk> {
    let mut r = f.reader("chunk")?;
    let mut actor = None;
    let (mut version, mut last_seq, mut ts, mut s0, mut s1) = (0, 0, 0, 0, 0);
    let mut tables: Vec<Arc<str>> = Vec::new();
    let mut raw: Vec<Field<'_>> = Vec::new();
    while let Some((t, f)) = r.next_field()? {
        match t {
            1 => actor = Some(get_actor(f)?),
            2 => version = f.u64("version")?,
            3 => last_seq = f.u64("last seq")?,
            4 => ts = f.u64("ts")?,
            5 => s0 = f.u64("seq start")?,
            6 => s1 = f.u64("seq end")?,
            7 => {
                if tables.len() >= MAX_TABLES {
                    return Err(DecodeError::TooLarge("table list"));
                }
                tables.push(f.str("table", MAX_NAME)?.into());
            }
            8 => raw.push(f),
            _ => {}
        }
    }
    let actor = actor.ok_or(DecodeError::Missing("actor"))?;
    let mut changes = Vec::with_capacity(raw.len());
    // Column names repeat in every row: each distinct one is allocated once per chunk.
    let mut cids: Vec<Arc<str>> = Vec::new();
    // A row's cells come one after the other with the same key: they share one copy.
    let no_pk: Arc<[u8]> = Arc::from(&[][..]);
    let no_name: Arc<str> = Arc::from("");
    let mut last_pk = no_pk.clone();
    for f in raw {
        let mut r = f.reader("change")?;
        let mut c = Change {
            table: no_name.clone(),
            pk: no_pk.clone(),
            cid: no_name.clone(),
            val: Value::Null,
            col_version: 0,
            db_version: version,
            seq: 0,
            site_id: actor,
            cl: 0,
        };
        let mut table = None;
        while let Some((t, f)) = r.next_field()? {
            match t {
                1 => table = Some(f.u64("table index")?),
                2 => {
                    let pk = f.bytes_max("primary key", MAX_PK)?;
                    if *last_pk != *pk {
                        last_pk = pk.into();
                    }
                    c.pk = last_pk.clone();
                }
                3 => c.cid = intern(&mut cids, f.str("column", MAX_NAME)?),
                4 => c.col_version = f.i64("col version")?,
                5 => c.seq = f.u64("seq")?,
                6 => c.cl = f.i64("causal length")?,
                10 => c.val = Value::Null,
                11 => c.val = Value::Integer(f.i64("integer")?),
                12 => {
                    // SQLite stores NaN as NULL, so no node ever sends one: it is garbage, and
                    // it would break the total order the merge rules compare values by.
                    let x = f.f64("real")?;
                    if x.is_nan() {
                        return Err(DecodeError::Invalid("real (NaN)"));
                    }
                    c.val = Value::Real(x);
                }
                13 => c.val = Value::Text(f.str("text", MAX_FRAME)?.to_string()),
                14 => c.val = Value::Blob(f.bytes("blob")?.to_vec()),
                _ => {}
            }
        }
        let ti = table.ok_or(DecodeError::Missing("table index"))?;
        c.table = tables
            .get(ti as usize)
            .ok_or(DecodeError::Invalid("table index"))?
            .clone();
        changes.push(c);
    }
    let chunk = Chunk {
        actor,
        version,
        last_seq,
        ts,
        seqs: s0..=s1,
        changes,
    };
    if !chunk.is_valid() {
        return Err(DecodeError::Invalid("chunk"));
    }
    Ok(chunk)
}

/// Most distinct column names interned per chunk (hostile input with more gets them
/// allocated one by one instead of searched).
const MAX_INTERNED: usize = 256;

fn intern(names: &mut Vec<Arc<str>>, name: &str) -> Arc<str> {
    if let Some(n) = names.iter().find(|n| ***n == *name) {
        return n.clone();
    }
    let n: Arc<str> = name.into();
    if names.len() < MAX_INTERNED {
        names.push(n.clone());
    }
    n
}

fn put_state(w: &mut Writer, s: &SyncState) {
    w.bytes(1, &s.actor.0);
    w.u64(3, s.db_bytes);
    for a in &s.actors {
        w.msg(2, |m| {
            m.bytes(1, &a.actor.0).u64(2, a.head);
            for r in &a.needed {
                put_range(m, 3, *r);
            }
            for (v, last, seqs) in &a.partials {
                m.msg(4, |p| {
                    p.u64(1, *v).u64(2, *last);
                    for r in seqs {
                        put_range(p, 3, *r);
                    }
                });
            }
        });
    }
}

fn get_state(f: Field<'_>) -> DResult<SyncState> {
    let mut r = f.reader("sync state")?;
    let mut s = SyncState::default();
    let mut actor = None;
    while let Some((t, f)) = r.next_field()? {
        match t {
            1 => actor = Some(get_actor(f)?),
            2 => {
                if s.actors.len() >= MAX_ACTORS {
                    return Err(DecodeError::TooLarge("actor list"));
                }
                s.actors.push(get_actor_state(f)?);
            }
            3 => s.db_bytes = f.u64("database size")?,
            _ => {}
        }
    }
    s.actor = actor.ok_or(DecodeError::Missing("actor"))?;
    Ok(s)
}

fn get_actor_state(f: Field<'_>) -> DResult<ActorState> {
    let limit = super::sync_state::MAX_RANGES_PER_ACTOR;
    let mut r = f.reader("actor state")?;
    let mut a = ActorState::default();
    let mut actor = None;
    while let Some((t, f)) = r.next_field()? {
        match t {
            1 => actor = Some(get_actor(f)?),
            2 => a.head = f.u64("head")?,
            3 if a.needed.len() < limit => a.needed.push(get_range(f)?),
            4 if a.partials.len() < limit => {
                let mut p = f.reader("partial")?;
                let (mut v, mut last, mut seqs) = (0, 0, Vec::new());
                while let Some((t, f)) = p.next_field()? {
                    match t {
                        1 => v = f.u64("version")?,
                        2 => last = f.u64("last seq")?,
                        3 if seqs.len() < limit => seqs.push(get_range(f)?),
                        3 => return Err(DecodeError::TooLarge("seq ranges")),
                        _ => {}
                    }
                }
                a.partials.push((v, last, seqs));
            }
            3 | 4 => return Err(DecodeError::TooLarge("actor state")),
            _ => {}
        }
    }
    a.actor = actor.ok_or(DecodeError::Missing("actor"))?;
    Ok(a)
}

fn put_need(w: &mut Writer, n: &Need) {
    match n {
        Need::Full { actor, versions } => {
            w.msg(1, |m| {
                m.bytes(1, &actor.0);
                put_range(m, 2, *versions);
            });
        }
        Need::Partial {
            actor,
            version,
            seqs,
        } => {
            w.msg(2, |m| {
                m.bytes(1, &actor.0).u64(2, *version);
                for r in seqs {
                    put_range(m, 3, *r);
                }
            });
        }
    }
}

fn get_needs(f: Field<'_>) -> DResult<Vec<Need>> {
    let mut r = f.reader("sync request")?;
    let mut out = Vec::new();
    while let Some((t, f)) = r.next_field()? {
        if t != 1 && t != 2 {
            continue;
        }
        if out.len() >= MAX_NEEDS {
            return Err(DecodeError::TooLarge("need list"));
        }
        let mut m = f.reader("need")?;
        let (mut actor, mut range, mut version, mut seqs) = (None, None, 0, Vec::new());
        while let Some((tt, ff)) = m.next_field()? {
            match (t, tt) {
                (_, 1) => actor = Some(get_actor(ff)?),
                (1, 2) => range = Some(get_range(ff)?),
                (2, 2) => version = ff.u64("version")?,
                (2, 3) if seqs.len() < MAX_NEEDS => seqs.push(get_range(ff)?),
                (2, 3) => return Err(DecodeError::TooLarge("seq ranges")),
                _ => {}
            }
        }
        let actor = actor.ok_or(DecodeError::Missing("actor"))?;
        out.push(match t {
            1 => Need::Full {
                actor,
                versions: range.ok_or(DecodeError::Missing("versions"))?,
            },
            _ => Need::Partial {
                actor,
                version,
                seqs,
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
