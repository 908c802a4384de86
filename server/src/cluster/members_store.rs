//! The member list on disk (`__vd_members`), kept off the membership loop.
//!
//! SWIM must answer probes on time whatever the store does: a long client transaction, a big
//! ingest or a slow checkpoint holds the writer lock for seconds. So the membership loop never
//! touches the store. It hands the latest member list to a persister task through a `watch`
//! channel (a queue of one: a newer list replaces an unwritten older one) and goes on; the
//! persister waits for the writer lock on a blocking thread. Reading the persisted list at
//! start goes through the read pool, which the writer never blocks (WAL).

use super::status::MemberView;
use crate::crdt::ActorId;
use crate::node::Node;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// Addresses of members persisted by a previous run (read pool: never waits for the writer).
pub async fn load(node: &Arc<Node>) -> Vec<SocketAddr> {
    let node = node.clone();
    let r = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<SocketAddr>> {
        let conn = node.reads.get()?;
        let mut stmt = conn.prepare("SELECT address FROM __vd_members WHERE state != 'down'")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for r in rows {
            let text = r?;
            match text.parse() {
                Ok(a) => out.push(a),
                Err(e) => tracing::warn!(address = %text, error = %e, "ignoring a persisted member with a bad address"),
            }
        }
        Ok(out)
    })
    .await;
    match r {
        Ok(Ok(addrs)) => addrs,
        Ok(Err(e)) => {
            tracing::warn!(error = %format!("{e:#}"), "reading persisted members failed");
            Vec::new()
        }
        Err(e) => {
            tracing::error!(error = %e, "reading persisted members panicked");
            Vec::new()
        }
    }
}

/// Handle to the persister task: [`Persister::save`] never waits. Dropping it lets the task
/// write the last list handed over and end.
pub struct Persister {
    tx: watch::Sender<Option<Vec<MemberView>>>,
}

impl Persister {
    /// Starts the persister task (it ends once the handle is dropped and the last list is
    /// written).
    pub fn start(node: Arc<Node>) -> Persister {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(run(node, rx));
        Persister { tx }
    }

    /// Hands `members` over to be written; replaces a list not yet written. Never blocks.
    pub fn save(&self, members: Vec<MemberView>) {
        self.tx.send_replace(Some(members));
    }
}

async fn run(node: Arc<Node>, mut rx: watch::Receiver<Option<Vec<MemberView>>>) {
    // `changed` reports a list handed over before the handle was dropped, then fails.
    while rx.changed().await.is_ok() {
        let members = rx.borrow_and_update().clone();
        if let Some(members) = members {
            write(&node, members).await;
        }
    }
}

/// Replaces `__vd_members` with `members`.
async fn write(node: &Arc<Node>, members: Vec<MemberView>) {
    let node = node.clone();
    let r = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let store = node.store.lock().expect("store lock");
        let conn = store.conn();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        conn.execute_batch("SAVEPOINT vd_members")?;
        let write = || -> anyhow::Result<()> {
            conn.execute("DELETE FROM __vd_members", [])?;
            for m in &members {
                let id = ActorId::parse(&m.actor_id).unwrap_or_default();
                conn.execute(
                    "INSERT OR REPLACE INTO __vd_members (actor, address, state, updated_at) VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![&id.0[..], m.address.to_string(), m.state, now],
                )?;
            }
            Ok(())
        };
        match write() {
            Ok(()) => conn.execute_batch("RELEASE vd_members")?,
            Err(e) => {
                conn.execute_batch("ROLLBACK TO vd_members; RELEASE vd_members")?;
                return Err(e);
            }
        }
        Ok(())
    })
    .await;
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "persisting members failed"),
        Err(e) => tracing::error!(error = %e, "persisting members panicked"),
    }
}
