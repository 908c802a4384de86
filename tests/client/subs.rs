//! Subscriptions over both transports, against real nodes that restart, die, and forget.

use crate::support::NodeDir;
use crate::{builder, client, fixed_port_dir, next, snapshot, SCHEMA};
use futures_util::StreamExt;
use verdigris_client::{
    ChangeType, Client, Error, HttpVersion, ResetReason, Statement, SubEvent, SubscribeOptions,
    Transport,
};

const BOTH: [Transport; 2] = [Transport::Ndjson, Transport::WebSocket];

fn opts(t: Transport) -> SubscribeOptions {
    SubscribeOptions::default().transport(t)
}

async fn write(c: &Client, sql: &str) {
    c.execute(&[Statement::new(sql)]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_query_follows_the_result() {
    let cases = [
        (Transport::Ndjson, HttpVersion::Http1),
        (Transport::Ndjson, HttpVersion::H2c),
        (Transport::WebSocket, HttpVersion::Http1),
    ];
    for (t, version) in cases {
        let dir = NodeDir::with_schema(SCHEMA);
        let node = dir.start();
        let c = builder([node.addr()])
            .http_version(version)
            .build()
            .unwrap();
        for (id, healthy) in [("m1", 1), ("m2", 1), ("m3", 0)] {
            write(&c, &format!("INSERT INTO machines VALUES ('{id}', 'web', '10.0.0.{}', 'started', {healthy})", &id[1..])).await;
        }
        let sql = "SELECT id, address FROM machines WHERE state = 'started' AND healthy = 1";
        let mut live = c.live_query::<(String, String)>(sql, opts(t));
        let up = live.next().await.unwrap().unwrap();
        assert!(up.snapshot && up.reset.is_none(), "{t:?}");
        assert_eq!(up.inserted.len(), 2);
        assert_eq!(live.columns(), ["id", "address"]);

        write(&c, "UPDATE machines SET healthy = 1 WHERE id = 'm3'").await;
        let up = live.next().await.unwrap().unwrap();
        assert_eq!(
            (up.inserted.len(), up.updated.len(), up.deleted.len()),
            (1, 0, 0),
            "{t:?}"
        );
        write(
            &c,
            "UPDATE machines SET address = '10.9.9.9' WHERE id = 'm1'",
        )
        .await;
        let up = live.next().await.unwrap().unwrap();
        assert_eq!(up.updated.len(), 1, "{t:?}");
        write(&c, "DELETE FROM machines WHERE id = 'm2'").await;
        let up = live.next().await.unwrap().unwrap();
        assert_eq!(up.deleted.len(), 1);
        assert_eq!(up.deleted[0].1 .0, "m2");
        assert_eq!(live.change_id(), Some(3));
        assert_eq!(live.subscription().last_change_id(), Some(3));
        assert!(live.subscription().query_id().is_some());

        let mut got: Vec<(String, String)> = live.rows().values().cloned().collect();
        got.sort();
        let want: Vec<(String, String)> = c.query_as(format!("{sql} ORDER BY id")).await.unwrap();
        assert_eq!(got, want, "{t:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_after_a_node_restart_without_reset() {
    for t in BOTH {
        let (dir, addr) = fixed_port_dir("", "");
        let node = dir.start();
        let c = client([addr]);
        write(&c, "INSERT INTO t VALUES (1, 'a', 0)").await;
        let mut sub = c.subscribe::<(i64, i64)>("SELECT id, b FROM t", opts(t));
        let (rows, cid) = snapshot(&mut sub).await;
        assert_eq!((rows, cid), (vec![(1, (1, 0))], Some(0)));
        for b in 1..=2 {
            write(&c, &format!("UPDATE t SET b = {b} WHERE id = 1")).await;
            assert_eq!(
                next(&mut sub).await,
                SubEvent::Change(ChangeType::Update, 1, (1, b), b as u64)
            );
        }
        let qid = sub.query_id();
        node.stop();
        let node = dir.start();
        assert_eq!(node.addr(), addr);
        // A change made while the client was away, then a live one: exactly the changes
        // after 2, no reset, no snapshot, nothing twice.
        for b in 3..=4 {
            write(&c, &format!("UPDATE t SET b = {b} WHERE id = 1")).await;
            assert_eq!(
                next(&mut sub).await,
                SubEvent::Change(ChangeType::Update, 1, (1, b), b as u64),
                "{t:?}"
            );
        }
        assert_eq!(sub.last_change_id(), Some(4));
        assert_eq!(
            sub.query_id(),
            qid,
            "{t:?}: the same subscription on the node"
        );
        drop(node);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_takes_a_fresh_snapshot_on_the_next_node() {
    for t in BOTH {
        let (da, dir_b) = (NodeDir::with_schema(SCHEMA), NodeDir::with_schema(SCHEMA));
        let (a, b) = (da.start(), dir_b.start());
        // Two independent nodes with different rows, so the new snapshot is recognizable.
        let (ca, cb) = (client([a.addr()]), client([b.addr()]));
        write(&ca, "INSERT INTO t VALUES (1, 'on a', 0)").await;
        write(&cb, "INSERT INTO t VALUES (2, 'on b', 0)").await;
        let c = client([a.addr(), b.addr()]);
        let mut sub = c.subscribe::<(i64, String)>("SELECT id, a FROM t", opts(t));
        let (rows, _) = snapshot(&mut sub).await;
        assert_eq!(rows, vec![(1, (1, "on a".to_string()))]);
        assert_eq!(sub.node(), Some(a.addr().to_string()));
        a.kill();
        assert_eq!(
            next(&mut sub).await,
            SubEvent::Reset(ResetReason::NodeChanged),
            "{t:?}"
        );
        let (rows, _) = snapshot(&mut sub).await;
        assert_eq!(
            rows.into_iter().map(|r| r.1).collect::<Vec<_>>(),
            vec![(2, "on b".to_string())]
        );
        assert_eq!(sub.node(), Some(b.addr().to_string()));
        write(&cb, "INSERT INTO t VALUES (3, 'also b', 0)").await;
        assert!(matches!(
            next(&mut sub).await,
            SubEvent::Change(ChangeType::Insert, _, (3, _), 1)
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trimmed_change_log_means_a_fresh_snapshot() {
    for t in BOTH {
        let (dir, addr) = fixed_port_dir("subscription_log_retention = 3", "");
        let config = std::fs::read_to_string(&dir.config).unwrap();
        let node = dir.start();
        let c = client([addr]);
        write(&c, "INSERT INTO t VALUES (1, 'a', 0)").await;
        let mut sub = c.subscribe::<(i64, i64)>("SELECT id, b FROM t", opts(t));
        snapshot(&mut sub).await;
        write(&c, "UPDATE t SET b = 1 WHERE id = 1").await;
        assert!(matches!(next(&mut sub).await, SubEvent::Change(_, _, _, 1)));
        node.stop();
        // Nine more changes while the subscriber cannot reach the node (it runs on another
        // port meanwhile), so its change log no longer reaches back to change 2.
        let other = crate::dead_addr();
        dir.write_config(&config.replace(&addr.to_string(), &other.to_string()));
        let hidden = dir.start();
        let w = client([other]);
        // A watcher on the hidden node sees each write land, so none coalesce into one change.
        let mut watch = w.subscribe::<(i64, i64)>("SELECT id, b FROM t", opts(t));
        snapshot(&mut watch).await;
        for b in 2..=10 {
            write(&w, &format!("UPDATE t SET b = {b} WHERE id = 1")).await;
            assert_eq!(
                next(&mut watch).await,
                SubEvent::Change(ChangeType::Update, 1, (1, b), b as u64),
                "{t:?}"
            );
        }
        drop(watch);
        hidden.stop();
        dir.write_config(&config);
        let node = dir.start();
        assert_eq!(
            next(&mut sub).await,
            SubEvent::Reset(ResetReason::TooOld),
            "{t:?}"
        );
        let (rows, cid) = snapshot(&mut sub).await;
        assert_eq!(rows, vec![(1, (1, 10))]);
        assert_eq!(cid, Some(10), "{t:?}");
        assert_eq!(sub.last_change_id(), cid);
        drop(node);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sql_ends_the_subscription() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let c = client([node.addr()]);
    for t in BOTH {
        let mut sub =
            c.subscribe::<Vec<verdigris_client::SqliteValue>>("SELECT * FROM nope", opts(t));
        let e = sub.next().await.unwrap().unwrap_err();
        assert!(!e.is_retryable(), "{t:?}: {e}");
        assert!(
            e.server_message().is_some_and(|m| m.contains("nope")),
            "{t:?}: {e}"
        );
        assert!(sub.next().await.is_none());
        assert!(!matches!(e, Error::Exhausted { .. }));
    }
    // Rows that do not fit the type are fatal too.
    write(&c, "INSERT INTO t VALUES (1, 'a', 0)").await;
    for t in BOTH {
        let mut sub = c.subscribe::<(i64, i64)>("SELECT id, a FROM t", opts(t));
        loop {
            match sub.next().await.unwrap() {
                Ok(ev) => assert!(matches!(ev, SubEvent::Columns(_)), "{t:?}: {ev:?}"),
                Err(e) => {
                    assert!(matches!(e, Error::Decode { .. }), "{t:?}: {e}");
                    break;
                }
            }
        }
        assert!(sub.next().await.is_none());
    }
}

/// A node of a two-node cluster: gossip on `gossip`, bootstrapping to `peer`.
fn cluster_dir(gossip: u16, peer: u16) -> NodeDir {
    NodeDir::builder()
        .schema(SCHEMA)
        .raw_config(&format!(
            "[db]\npath = \"{{dir}}/data/state.db\"\nschema_paths = [\"{{dir}}/schema\"]\n\
             [api]\naddr = \"127.0.0.1:0\"\n\
             [gossip]\naddr = \"127.0.0.1:{gossip}\"\nplaintext = true\nbootstrap = [\"127.0.0.1:{peer}\"]\n\
             [admin]\npath = \"{{dir}}/admin.sock\"\n\
             [perf]\nmin_sync_backoff = 1\nmax_sync_backoff = 2\n"
        ))
        .build()
}

fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_within_a_cluster_continues_from_the_replicated_rows() {
    for t in BOTH {
        let (pa, pb) = (free_udp_port(), free_udp_port());
        let (da, db) = (cluster_dir(pa, pb), cluster_dir(pb, pa));
        let (a, b) = (da.start(), db.start());
        let (ca, cb) = (client([a.addr()]), client([b.addr()]));
        let c = client([a.addr(), b.addr()]);
        let mut sub = c.subscribe::<(i64, String)>("SELECT id, a FROM t", opts(t));
        let (rows, _) = snapshot(&mut sub).await;
        assert!(rows.is_empty());
        write(&ca, "INSERT INTO t VALUES (1, 'one', 0), (2, 'two', 0)").await;
        for _ in 0..2 {
            assert!(matches!(
                next(&mut sub).await,
                SubEvent::Change(ChangeType::Insert, ..)
            ));
        }
        // B has A's rows by replication before A dies.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let got: Vec<(i64, String)> = cb.query_as("SELECT id, a FROM t").await.unwrap();
            if got.len() == 2 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "B did not receive A's rows: {got:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        a.kill();
        assert_eq!(
            next(&mut sub).await,
            SubEvent::Reset(ResetReason::NodeChanged),
            "{t:?}"
        );
        let (rows, change_id) = snapshot(&mut sub).await;
        let mut cells: Vec<(i64, String)> = rows.into_iter().map(|r| r.1).collect();
        cells.sort();
        assert_eq!(cells, vec![(1, "one".into()), (2, "two".into())], "{t:?}");
        assert_eq!(sub.node(), Some(b.addr().to_string()));
        // Live changes continue from B, with B's change ids.
        write(&cb, "UPDATE t SET a = 'uno' WHERE id = 1").await;
        match next(&mut sub).await {
            SubEvent::Change(ChangeType::Update, _, (1, a), id) => {
                assert_eq!(a, "uno");
                assert_eq!(Some(id), change_id.map(|c| c + 1));
            }
            other => panic!("expected the update from B, got {other:?}"),
        }
    }
}
