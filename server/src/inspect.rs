//! Bookkeeping introspection for the admin socket, in Corrosion's shapes: the sync state a
//! node would send (`verdigris sync generate`), a consistency check of the in-memory
//! bookkeeping against the database (`sync check-bookie-consistency`) and what a node holds of
//! one version (`actor version`).

use crate::crdt::ActorId;
use crate::store::bookkeeping::{Booked, Bookie};
use crate::store::buffer::read_bookkeeping;
use crate::store::feed::read_versions;
use crate::store::Shared;
use anyhow::Result;
use rusqlite::{Connection, OptionalExtension};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

/// Corrosion's `SyncStateV1` as JSON: `heads` (highest version seen per actor), `need`
/// (missing version ranges), `partial_need` (per partial version, its missing seq ranges).
pub fn sync_state(book: &Bookie, me: ActorId) -> Value {
    let (mut heads, mut need, mut partial_need) = (Map::new(), Map::new(), Map::new());
    let mut actors: Vec<(&ActorId, &Booked)> = book.actors().filter(|(_, b)| b.max > 0).collect();
    actors.sort_by_key(|(a, _)| **a);
    for (actor, b) in actors {
        let key = actor.to_string();
        heads.insert(key.clone(), json!(b.max));
        if !b.needed.is_empty() {
            let ranges: Vec<[u64; 2]> = b.needed.iter().map(|(x, y)| [x, y]).collect();
            need.insert(key.clone(), json!(ranges));
        }
        if !b.partials.is_empty() {
            let per_version: Map<String, Value> = b
                .partials
                .iter()
                .map(|(v, p)| {
                    let missing: Vec<[u64; 2]> = p
                        .seqs
                        .missing_in(0, p.last_seq)
                        .into_iter()
                        .map(|(x, y)| [x, y])
                        .collect();
                    (v.to_string(), json!(missing))
                })
                .collect();
            partial_need.insert(key, Value::Object(per_version));
        }
    }
    json!({
        "actor_id": me.to_string(),
        "heads": heads,
        "need": need,
        "partial_need": partial_need,
        "last_cleared_ts": null,
    })
}

/// Differences between the in-memory bookkeeping and what the database records, one line
/// per actor that differs (empty when consistent).
pub fn check_bookkeeping(conn: &Connection, shared: &Shared) -> Result<Vec<String>> {
    // Read the database first: the in-memory state only moves forward after commits, so a
    // write landing in between shows as memory ahead, never as a false "missing".
    let tx = conn.unchecked_transaction()?;
    let db = read_bookkeeping(&tx, shared)?;
    drop(tx);
    let book = shared.book.read().expect("book lock");
    let actors: BTreeSet<ActorId> = book
        .actors()
        .map(|(a, _)| *a)
        .chain(db.keys().copied())
        .collect();
    let empty = Booked::default();
    let mut out = Vec::new();
    for a in actors {
        let mem = book.get(&a).unwrap_or(&empty);
        let disk = db.get(&a).unwrap_or(&empty);
        if mem.max == 0 && disk.max == 0 {
            continue;
        }
        if mem != disk {
            out.push(format!(
                "actor {a}: memory has head {} with {} missing and {} partial, the database head {} with {} missing and {} partial",
                mem.max,
                mem.needed.len(),
                mem.partials.len(),
                disk.max,
                disk.needed.len(),
                disk.partials.len()
            ));
        }
    }
    Ok(out)
}

/// What this node holds of version `version` of `actor`, as Corrosion's `actor version`
/// answers: `null` (never seen), `{"partial": …}`, `{"current": {"db_version", "last_seq"}}`
/// (applied, and some of its changes are still current) or `"cleared"` (every change of it
/// was overwritten later).
pub fn actor_version(
    conn: &Connection,
    shared: &Shared,
    actor: ActorId,
    version: u64,
) -> Result<Value> {
    {
        let book = shared.book.read().expect("book lock");
        if let Some(p) = book.get(&actor).and_then(|b| b.partials.get(&version)) {
            let seqs: Vec<[u64; 2]> = p.seqs.iter().map(|(x, y)| [x, y]).collect();
            return Ok(json!({"partial": {"seqs": seqs, "last_seq": p.last_seq, "ts": p.ts}}));
        }
    }
    let Some(site) = shared.sites.read().expect("sites lock").ordinal(&actor) else {
        return Ok(Value::Null);
    };
    let tx = conn.unchecked_transaction()?;
    let last_seq: Option<u64> = tx
        .query_row(
            "SELECT last_seq FROM __vd_versions WHERE site = ?1 AND db_version = ?2",
            rusqlite::params![site, version],
            |r| r.get(0),
        )
        .optional()?;
    let Some(last_seq) = last_seq else {
        return Ok(Value::Null);
    };
    let current = read_versions(&tx, shared, actor, version..=version)?
        .iter()
        .any(|v| !v.changes.is_empty());
    Ok(if current {
        json!({"current": {"db_version": version, "last_seq": last_seq}})
    } else {
        json!("cleared")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Statement, Store};

    #[test]
    fn state_versions_and_consistency_of_a_store() {
        let mut s = Store::open_in_memory().unwrap();
        s.apply_schema("CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, v TEXT);")
            .unwrap();
        let w = |s: &mut Store, sql: &str| s.transact(&[Statement::new(sql)], None).unwrap();
        w(&mut s, "INSERT INTO t VALUES (1, 'a')");
        w(&mut s, "UPDATE t SET v = 'b' WHERE id = 1");
        let me = s.actor_id();
        let shared = s.shared();
        let state = sync_state(&shared.book.read().unwrap(), me);
        assert_eq!(state["actor_id"], json!(me.to_string()));
        assert_eq!(state["heads"][me.to_string()], json!(2));
        assert_eq!(state["need"], json!({}));
        // Version 1's only change was overwritten by version 2.
        assert_eq!(
            actor_version(s.conn(), &shared, me, 1).unwrap(),
            json!("cleared")
        );
        assert_eq!(
            actor_version(s.conn(), &shared, me, 2).unwrap(),
            json!({"current": {"db_version": 2, "last_seq": 0}})
        );
        assert_eq!(
            actor_version(s.conn(), &shared, me, 3).unwrap(),
            Value::Null
        );
        assert_eq!(
            actor_version(s.conn(), &shared, ActorId([9; 16]), 1).unwrap(),
            Value::Null
        );
        assert!(check_bookkeeping(s.conn(), &shared).unwrap().is_empty());
        // A version the memory believes in but the database does not hold is reported.
        shared
            .book
            .write()
            .unwrap()
            .record_known(ActorId([7; 16]), 1..=3);
        let diff = check_bookkeeping(s.conn(), &shared).unwrap();
        assert_eq!(diff.len(), 1, "{diff:?}");
        assert!(diff[0].contains("head 3"), "{diff:?}");
        assert_eq!(s.reconcile_bookkeeping().unwrap(), (0, 0));
        assert!(check_bookkeeping(s.conn(), &shared).unwrap().is_empty());
    }
}
