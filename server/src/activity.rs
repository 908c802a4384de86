//! Counters of what the store committed — this node's own write transactions and rows, and
//! the remote versions and rows it applied — so `GET /v1/stats` (and the console's chart)
//! can derive rates. Bumped by a commit listener on the writer's thread: a few relaxed atomic
//! adds, never a lock or a wait.

use crate::store::Committed;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters since the node started (never reset).
#[derive(Debug, Default)]
pub struct Activity {
    local_transactions: AtomicU64,
    local_rows: AtomicU64,
    remote_versions: AtomicU64,
    remote_rows: AtomicU64,
}

/// A reading of [`Activity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ActivitySnapshot {
    /// Client transactions that changed replicated rows (each made one version).
    pub local_transactions: u64,
    /// Replicated rows those transactions changed.
    pub local_rows: u64,
    /// Versions of other nodes applied here (by broadcast, sync or snapshot catch-up).
    pub remote_versions: u64,
    /// Rows whose state those versions changed.
    pub remote_rows: u64,
}

impl Activity {
    /// Counts one commit (a commit listener: called right after COMMIT).
    pub fn record(&self, c: &Committed) {
        let rows = c.changed.len() as u64;
        if c.local {
            if !c.versions.is_empty() {
                self.local_transactions.fetch_add(1, Ordering::Relaxed);
            }
            self.local_rows.fetch_add(rows, Ordering::Relaxed);
        } else {
            self.remote_versions
                .fetch_add(c.versions.len() as u64, Ordering::Relaxed);
            self.remote_rows.fetch_add(rows, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> ActivitySnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ActivitySnapshot {
            local_transactions: get(&self.local_transactions),
            local_rows: get(&self.local_rows),
            remote_versions: get(&self.remote_versions),
            remote_rows: get(&self.remote_rows),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Statement, Store};
    use std::sync::Arc;

    #[test]
    fn counts_local_writes_per_transaction_and_row() {
        let mut s = Store::open_in_memory().unwrap();
        s.apply_schema("CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, v TEXT);")
            .unwrap();
        let a = Arc::new(Activity::default());
        let a2 = a.clone();
        s.on_commit(Box::new(move |c| a2.record(c)));
        let w = |s: &mut Store, sql: &str| s.transact(&[Statement::new(sql)], None).unwrap();
        w(&mut s, "INSERT INTO t VALUES (1, 'a'), (2, 'b')");
        w(&mut s, "UPDATE t SET v = 'c' WHERE id = 1");
        // No effective change: no version, not counted.
        w(&mut s, "UPDATE t SET v = 'c' WHERE id = 1");
        let snap = a.snapshot();
        assert_eq!(snap.local_transactions, 2);
        assert_eq!(snap.local_rows, 3);
        assert_eq!((snap.remote_versions, snap.remote_rows), (0, 0));
    }
}
