//! A matcher round whose persist step fails publishes nothing, and its change is not lost:
//! the round is retried once the disk accepts writes again (same change ids, contiguous), and
//! a crash while the failure lasts loses nothing either (the change is caught up at restart
//! and served by `from=`). If the state on disk cannot be read back either, the subscription
//! ends with an in-stream error.
//!
//! The failure is a real SQLite error: a trigger on the node's `subscriptions.db` that aborts
//! every insert into the change log.

use crate::client::Sub;
use crate::support::{Node, NodeDir, Proto};
use crate::SCHEMA;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub(crate) const FAIL: &str = "CREATE TRIGGER vd_test_fail BEFORE INSERT ON sub_changes \
                    BEGIN SELECT RAISE(ABORT, 'injected persist failure'); END;";
pub(crate) const HEAL: &str = "DROP TRIGGER vd_test_fail;";
const FAILED_LOG: &str = "subscription round failed";

pub(crate) fn subs_db(dir: &Path) -> PathBuf {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)
            .expect("listing the node dir")
            .flatten()
        {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "subscriptions.db") {
                return p;
            }
        }
    }
    panic!("no subscriptions.db under {}", dir.display());
}

pub(crate) fn exec(db: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(db).expect("opening subscriptions.db");
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute_batch(sql).expect("changing subscriptions.db");
}

/// Waits until the node has logged `n` failed rounds.
pub(crate) async fn await_failures(node: &Node, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.stderr().matches(FAILED_LOG).count() + node.stdout().matches(FAILED_LOG).count() < n
    {
        assert!(
            Instant::now() < deadline,
            "the node never reported the failed round\nstderr:\n{}",
            node.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_whose_persist_fails_publishes_nothing_and_is_retried() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.api(Proto::Http1).with_nodelay();
    let stmt = json!("SELECT id, a FROM t");
    let mut sub = Sub::post(&node.api(Proto::Http1).with_nodelay(), &stmt).await;
    w.write(&json!(["INSERT INTO t VALUES (1, 'a', 1)"])).await;
    sub.until_id(1).await;

    exec(&subs_db(dir.path()), FAIL);
    w.write(&json!(["INSERT INTO t VALUES (2, 'b', 2)"])).await;
    await_failures(&node, 1).await;
    // Retries keep failing while the trigger is there: nothing reaches the listener, and a
    // new listener starts from the state on disk.
    await_failures(&node, 2).await;
    assert!(
        sub.try_change(Duration::from_millis(300)).await.is_none(),
        "a change was published although its round was not persisted: {:?}",
        sub.changes
    );
    let mut other = Sub::get(&node.api(Proto::Http1).with_nodelay(), &sub.id).await;
    assert_eq!(
        other.eoq_change_id, 1,
        "a snapshot never runs ahead of the disk"
    );

    exec(&subs_db(dir.path()), HEAL);
    // The retry publishes change 2 (contiguity is checked by `Sub::apply`) to both.
    sub.sync(&w, &stmt).await;
    other.sync(&w, &stmt).await;
    assert_eq!((sub.last, other.last), (2, 2), "{:?}", sub.changes);
    assert_eq!(sub.changes[1].cells, vec![json!(2), json!("b")]);
    // And it is on disk: a resume from 1 replays it.
    let mut resumed = Sub::resume(&node.api(Proto::Http1).with_nodelay(), &sub.id, 1).await;
    let c = resumed.change().await;
    assert_eq!((c.id, c.cells.clone()), (2, vec![json!(2), json!("b")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_persist_fails_loses_no_change() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.api(Proto::Http1).with_nodelay();
    let keyed = json!("SELECT id, a FROM t");
    let agg = json!("SELECT count(*), max(a) FROM t");
    let mut a = Sub::post(&node.api(Proto::Http1).with_nodelay(), &keyed).await;
    let mut b = Sub::post(&node.api(Proto::Http1).with_nodelay(), &agg).await;
    w.write(&json!(["INSERT INTO t VALUES (1, 'a', 1)"])).await;
    a.sync(&w, &keyed).await;
    b.sync(&w, &agg).await;
    assert_eq!((a.last, b.last), (1, 1));

    let db = subs_db(dir.path());
    exec(&db, FAIL);
    w.write(&json!(["INSERT INTO t VALUES (2, 'b', 2)"])).await;
    // Both units failed at least once (each logs its own failure).
    await_failures(&node, 2).await;
    assert!(a.try_change(Duration::from_millis(200)).await.is_none());
    assert!(b.try_change(Duration::from_millis(200)).await.is_none());
    node.kill();
    exec(&db, HEAL);

    let node = dir.start();
    let api = node.api(Proto::Http1).with_nodelay();
    // The change the listeners never saw is caught up at restart as change 2, exactly once.
    let mut ra = Sub::resume_state(&api, &a).await;
    let mut rb = Sub::resume_state(&api, &b).await;
    ra.sync(&api, &keyed).await;
    rb.sync(&api, &agg).await;
    assert_eq!(
        (ra.last, rb.last),
        (2, 2),
        "{:?} / {:?}",
        ra.changes,
        rb.changes
    );
    assert!(ra.try_change(Duration::from_millis(200)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_whose_state_on_disk_is_gone_ends_with_an_error() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.api(Proto::Http1).with_nodelay();
    let stmt = json!("SELECT id, a FROM t");
    let mut sub = Sub::post(&node.api(Proto::Http1).with_nodelay(), &stmt).await;
    w.write(&json!(["INSERT INTO t VALUES (1, 'a', 1)"])).await;
    sub.until_id(1).await;

    // The round fails, and what every listener has seen can no longer be read back: the node
    // cannot keep this subscription exact, so it ends it with an error rather than guess.
    let db = subs_db(dir.path());
    exec(
        &db,
        &format!("{FAIL} DELETE FROM subs WHERE id = '{}';", sub.id),
    );
    w.write(&json!(["INSERT INTO t VALUES (2, 'b', 2)"])).await;
    sub.expect_error_end("subscription ended by the node").await;
    assert_eq!(sub.last, 1, "nothing after the last persisted change");

    // Subscribing again starts a fresh subscription that follows the table.
    exec(&db, HEAL);
    let mut again = Sub::post(&node.api(Proto::Http1).with_nodelay(), &stmt).await;
    assert_ne!(again.id, sub.id);
    w.write(&json!(["INSERT INTO t VALUES (3, 'c', 3)"])).await;
    again.sync(&w, &stmt).await;
    assert!(node.panics().is_empty(), "{:?}", node.panics());
}
