//! The WebSocket transport: requests, and one stalled consumer among many.

use crate::support::NodeDir;
use crate::{builder, client, next, snapshot, SCHEMA};
use futures_util::StreamExt;
use std::time::Duration;
use verdigris_client::types::ws::ErrorCode;
use verdigris_client::{
    ChangeType, Error, ResetReason, SqliteValue, Statement, SubEvent, SubscribeOptions,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_transactions_and_pings() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let c = client([node.addr()]);
    let r = c
        .ws_execute(&[Statement::with_params(
            "INSERT INTO t VALUES (?, ?, ?)",
            [SqliteValue::from(1), "a".into(), 5.into()],
        )])
        .await
        .unwrap();
    assert!(r.version.is_some());
    let rows: Vec<(i64, String, i64)> = c.ws_query_as("SELECT id, a, b FROM t").await.unwrap();
    assert_eq!(rows, vec![(1, "a".to_string(), 5)]);
    let (cols, rows) = c
        .ws_query_typed::<(i64,)>("SELECT count(*) AS n FROM t", Some(Duration::from_secs(5)))
        .await
        .unwrap()
        .collect_rows()
        .await
        .unwrap();
    assert_eq!((cols, rows), (vec!["n".to_string()], vec![(1,)]));
    let mut q = c.ws_query("SELECT * FROM nope").await.unwrap();
    let e = q.next().await.unwrap().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Server {
                code: Some(ErrorCode::BadRequest),
                ..
            }
        ),
        "{e}"
    );
    assert!(q.next().await.is_none());
    let e = c
        .ws_execute(&["INSERT INTO nope VALUES (1)".into()])
        .await
        .unwrap_err();
    assert!(
        e.server_message().is_some_and(|m| m.contains("nope")),
        "{e}"
    );
    assert!(!e.is_retryable());
    assert!(c.ws_ping().await.unwrap() < Duration::from_secs(5));
    // A large result read as it arrives: the consumer keeps up with the connection.
    c.execute(&["WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i+1 FROM n WHERE i < 30000) INSERT INTO t SELECT i, printf('%.100c', 'x'), i FROM n".into()])
        .await
        .unwrap();
    let big: Vec<(i64, String, i64)> = c.ws_query_as("SELECT id, a, b FROM t").await.unwrap();
    assert_eq!(big.len(), 30000);
    // So is a large snapshot (bounded by bytes, not by the change count).
    let mut live =
        c.live_query::<(i64, String, i64)>("SELECT id, a, b FROM t", SubscribeOptions::websocket());
    let up = live.next().await.unwrap().unwrap();
    assert!(up.snapshot && up.reset.is_none());
    assert_eq!(live.rows().len(), 30000);
    drop(live);
    c.execute(&["DELETE FROM t WHERE id > 1".into()])
        .await
        .unwrap();
    // The socket survived the errors.
    assert_eq!(
        c.ws_query_as::<(i64,)>("SELECT id FROM t").await.unwrap(),
        vec![(1,)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscription_does_not_hold_up_the_others() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let c = builder([node.addr()])
        .subscription_buffer(8)
        .build()
        .unwrap();
    c.execute(&["INSERT INTO t VALUES (1, 'a', 0)".into()])
        .await
        .unwrap();
    let ws = SubscribeOptions::websocket();
    let mut stalled = c.subscribe::<(i64, i64)>("SELECT id, b FROM t", ws.clone());
    let mut flowing = c.subscribe::<(i64, String, i64)>("SELECT id, a, b FROM t", ws);
    snapshot(&mut stalled).await;
    snapshot(&mut flowing).await;
    // `stalled` is not read while 100 changes go by; `flowing` sees every one, in order.
    for b in 1..=100i64 {
        c.execute(&[Statement::with_params(
            "UPDATE t SET b = ? WHERE id = 1",
            [b],
        )])
        .await
        .unwrap();
        assert_eq!(
            next(&mut flowing).await,
            SubEvent::Change(ChangeType::Update, 1, (1, "a".to_string(), b), b as u64)
        );
    }
    // The stalled one gets what fitted in its buffer, then starts over with the current rows.
    // It is its own subscription, maintained on its own: under load the node may fold several
    // writes into one change, so its ids are contiguous but need not equal the write count.
    let (mut buffered, mut last) = (0, 0u64);
    let reset = loop {
        match next(&mut stalled).await {
            SubEvent::Change(_, _, (_, b), cid) => {
                buffered += 1;
                assert_eq!(cid, last + 1, "contiguous before the reset");
                assert!(b as u64 >= cid && b <= 100, "b {b} at change {cid}");
                last = cid;
            }
            SubEvent::Reset(why) => break why,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(reset, ResetReason::Behind);
    assert!(buffered < 100, "{buffered} changes buffered");
    // The new snapshot may trail the last write by a round; what it lacks then arrives as
    // the next changes, contiguous after the snapshot's id.
    let (rows, cid) = snapshot(&mut stalled).await;
    let (mut row, mut cid) = (
        rows[0].1,
        cid.expect("a subscription snapshot has a change id"),
    );
    while row != (1, 100) {
        match next(&mut stalled).await {
            SubEvent::Change(_, _, r, c) => {
                assert_eq!(c, cid + 1, "contiguous after the snapshot");
                (row, cid) = (r, c);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Both keep following.
    c.execute(&["UPDATE t SET b = 101 WHERE id = 1".into()])
        .await
        .unwrap();
    assert_eq!(
        next(&mut stalled).await,
        SubEvent::Change(ChangeType::Update, 1, (1, 101), cid + 1)
    );
    assert!(matches!(
        next(&mut flowing).await,
        SubEvent::Change(_, _, (1, _, 101), 101)
    ));
    assert!(node.panics().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_subscriptions_share_the_socket() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let c = client([node.addr()]);
    for i in 0..20 {
        c.execute(&[Statement::with_params(
            "INSERT INTO t VALUES (?, 'x', 0)",
            [i],
        )])
        .await
        .unwrap();
    }
    let mut subs: Vec<_> = (0..20)
        .map(|i| {
            c.subscribe::<(i64, i64)>(
                Statement::with_params("SELECT id, b FROM t WHERE id = ?", [i]),
                SubscribeOptions::websocket(),
            )
        })
        .collect();
    for s in &mut subs {
        let (rows, _) = snapshot(s).await;
        assert_eq!(rows.len(), 1);
    }
    c.execute(&["UPDATE t SET b = 7".into()]).await.unwrap();
    for (i, s) in subs.iter_mut().enumerate() {
        assert_eq!(
            next(s).await,
            SubEvent::Change(ChangeType::Update, 1, (i as i64, 7), 1)
        );
    }
    // Dropping subscriptions unsubscribes them; the rest carry on.
    subs.truncate(5);
    c.execute(&["UPDATE t SET b = 8".into()]).await.unwrap();
    for (i, s) in subs.iter_mut().enumerate() {
        assert_eq!(
            next(s).await,
            SubEvent::Change(ChangeType::Update, 1, (i as i64, 8), 2)
        );
    }
}
