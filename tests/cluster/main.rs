//! Real-process cluster tests: several `verdigris agent` processes on loopback, gossiping over
//! QUIC. Each test asserts convergence of the replicated table on every node.

mod bench;
mod bench_recovery;
mod hostile;
mod recovery;
mod stress;
mod subs;
mod support;
mod tls;

use serde_json::json;
use support::*;

const ALL: &str = "SELECT id, owner, val, n FROM items ORDER BY id";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge() {
    let _serial = serial().await;
    let (_dirs, [a, b, c]) = three_nodes().await;
    // Writes on every node, including overlapping keys (concurrent updates of row 1).
    for (i, n) in [&a, &b, &c].iter().enumerate() {
        let base = (i as i64 + 1) * 1000;
        for k in 0..20 {
            n.exec(json!([[
                "INSERT INTO items (id, owner, val, n) VALUES (?1, ?2, ?3, ?4)",
                [base + k, format!("node{i}"), format!("v{k}"), k]
            ]]))
            .await;
        }
        n.exec(json!([[
            "INSERT INTO items (id, owner, val, n) VALUES (1, ?1, 'contended', ?2) ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, n = excluded.n",
            [format!("node{i}"), i]
        ]]))
        .await;
    }
    b.exec(json!(["DELETE FROM items WHERE id = 1005"])).await;
    let rows = wait_converged(&[&a, &b, &c], ALL, 30).await;
    assert_eq!(rows.len(), 60, "3×20 rows + row 1 − one deleted row");
    assert!(rows.iter().all(|r| r[0] != 1005));
    for n in [&a, &b, &c] {
        let h = n.health().await;
        assert_eq!(h["members"], 3, "{h}");
    }
    // Every node reports the others through `cluster members`.
    let members = a.admin(json!({"Cluster": "Members"})).await;
    let addrs: Vec<&str> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["address"].as_str().unwrap())
        .collect();
    assert!(addrs.contains(&b.gossip.to_string().as_str()), "{members}");
    assert!(addrs.contains(&c.gossip.to_string().as_str()), "{members}");
    // `cluster rejoin` renews A's identity: the others learn the new one, keep A alive, and
    // A's writes still arrive.
    let states = a.admin(json!({"Cluster": "MembershipStates"})).await;
    let before = states["identity"]["bump"].as_u64().expect("a bump");
    let r = a.admin(json!({"Cluster": "Rejoin"})).await;
    let bump = r["rejoined"]["bump"].as_u64().expect("a renewed bump");
    assert!(bump > before, "{r}");
    let gossip_a = a.gossip.to_string();
    eventually(30, "B and C to see A's renewed identity alive", || async {
        let mut seen = true;
        for n in [&b, &c] {
            let s = n.admin(json!({"Cluster": "MembershipStates"})).await;
            seen &= s["members"].as_array().is_some_and(|ms| {
                ms.iter().any(|m| {
                    m["address"] == gossip_a.as_str() && m["bump"] == bump && m["state"] == "alive"
                })
            });
        }
        seen
    })
    .await;
    a.exec(json!([
        "INSERT INTO items (id, owner, val, n) VALUES (5000, 'a', 'after rejoin', 0)"
    ]))
    .await;
    let rows = wait_converged(&[&a, &b, &c], ALL, 30).await;
    assert_eq!(rows.len(), 61);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_catches_up_by_sync_including_big_transactions() {
    let _serial = serial().await;
    let (da, db, dc) = (NodeDir::new(), NodeDir::new(), NodeDir::new());
    let a = da.start(&[]);
    let b = db.start(&[a.gossip]);
    wait_for_mesh(&[&a, &b]).await;
    // 100k rows: ten transactions of 10k rows each (each version is chunked on the wire).
    for t in 0..10 {
        a.exec(insert_range("a", t * 10_000, (t + 1) * 10_000))
            .await;
    }
    eventually(120, "b to receive 100k rows", || async {
        b.count("items").await == 100_000
    })
    .await;
    // C joins after the fact, knowing only B: everything comes through sync, change by
    // change (snapshot bootstrap is covered by its own test).
    let dc = NodeDir {
        gossip_extra: "snapshot_bootstrap = false".into(),
        ..dc
    };
    let c = dc.start(&[b.gossip]);
    eventually(180, "the late joiner to catch up", || async {
        c.count("items").await == 100_000
    })
    .await;
    wait_converged(&[&a, &b, &c], ALL, 60).await;
    eventually(30, "no gaps left on the late joiner", || async {
        c.health().await["gaps"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_node_restarts_and_loses_no_acknowledged_write() {
    let _serial = serial().await;
    let ([_da, _db, dc], [a, b, mut c]) = three_nodes().await;
    // C restarts below without a bootstrap list: wait until it has persisted its members.
    eventually(30, "C to persist its two peers", || async {
        let rows = c
            .query("SELECT count(*) FROM __vd_members WHERE state = 'alive'")
            .await;
        rows[0][0] == 2
    })
    .await;
    let mut acked: Vec<i64> = Vec::new();
    for k in 0..300i64 {
        if k == 150 {
            c.kill();
        }
        if k % 3 == 2 && k >= 150 {
            continue; // c is down
        }
        let (node, owner) = match k % 3 {
            0 => (&a, "a"),
            1 => (&b, "b"),
            _ => (&c, "c"),
        };
        let stmt = json!([[
            "INSERT INTO items (id, owner, val, n) VALUES (?1, ?2, 'x', ?1)",
            [k, owner]
        ]]);
        if node.try_exec(stmt).await {
            acked.push(k);
        }
    }
    let c_gossip = c.gossip;
    drop(c);
    let c = dc.start_on(&[], c_gossip.port());
    let rows = wait_converged(&[&a, &b, &c], ALL, 60).await;
    let ids: Vec<i64> = rows.iter().map(|r| r[0].as_i64().unwrap()).collect();
    for k in &acked {
        assert!(ids.contains(k), "acknowledged write {k} was lost");
    }
    assert!(
        acked.len() >= 250,
        "most writes were acknowledged: {}",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_heals_and_converges() {
    let _serial = serial().await;
    let (_dirs, [a, b, c]) = three_nodes().await;
    // Cut C off from A and B (both directions, enforced on C's side).
    c.admin(json!({"Cluster": {"Partition": [a.gossip.to_string(), b.gossip.to_string()]}}))
        .await;
    a.exec(json!([["INSERT INTO items (id, owner) VALUES (1, 'a')"]]))
        .await;
    c.exec(json!([["INSERT INTO items (id, owner) VALUES (2, 'c')"]]))
        .await;
    wait_converged(&[&a, &b], "SELECT id FROM items WHERE id = 1", 10).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        c.count("items").await,
        1,
        "the partitioned node saw nothing"
    );
    assert_eq!(a.count("items").await, 1, "the majority saw nothing of C");
    c.admin(json!({"Cluster": "Heal"})).await;
    let rows = wait_converged(&[&a, &b, &c], ALL, 60).await;
    assert_eq!(rows.len(), 2);
}

/// A table added to one node's schema before the others (a rolling schema change): its rows
/// cannot apply on a node that lacks the table, and arrive there once that node reloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_a_table_another_node_lacks_arrive_after_its_reload() {
    let _serial = serial().await;
    let (da, db) = (NodeDir::new(), NodeDir::new());
    let late = "CREATE TABLE late (id INTEGER NOT NULL PRIMARY KEY, note TEXT);\n";
    std::fs::write(da.path().join("schema.sql"), format!("{SCHEMA}{late}")).unwrap();
    let a = da.start(&[]);
    let b = db.start(&[a.gossip]);
    wait_for_mesh(&[&a, &b]).await;
    a.exec(json!([
        ["INSERT INTO late (id, note) VALUES (1, 'first')"],
        ["INSERT INTO items (id, owner, val, n) VALUES (1, 'a', 'x', 1)"]
    ]))
    .await;
    a.exec(json!([
        "INSERT INTO items (id, owner, val, n) VALUES (2, 'a', 'y', 2)"
    ]))
    .await;
    // The version that does not touch `late` applies; the other one cannot yet.
    eventually(30, "the items-only version to arrive", || async {
        b.query("SELECT id FROM items WHERE id = 2").await.len() == 1
    })
    .await;
    assert!(b
        .query("SELECT id FROM items WHERE id = 1")
        .await
        .is_empty());
    std::fs::write(db.path().join("schema.sql"), format!("{SCHEMA}{late}")).unwrap();
    b.admin(json!("Reload")).await;
    let rows = wait_converged(&[&a, &b], "SELECT id, note FROM late", 30).await;
    assert_eq!(rows, vec![vec![json!(1), json!("first")]]);
    wait_converged(&[&a, &b], ALL, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_settles_after_a_partition_heals() {
    let _serial = serial().await;
    let (_dirs, [a, b, c]) = three_nodes().await;
    let nodes = [&a, &b, &c];
    // A short partition (members only suspected), then a long one (members declared down,
    // identities renewed on the way back).
    for state in ["suspect", "down"] {
        c.admin(json!({"Cluster": {"Partition": [a.gossip.to_string(), b.gossip.to_string()]}}))
            .await;
        eventually(60, &format!("C to see both peers {state}"), || async {
            let m = c.admin(json!({"Cluster": "Members"})).await;
            m.as_array()
                .is_some_and(|m| m.iter().filter(|m| m["state"] == state).count() == 2)
        })
        .await;
        c.admin(json!({"Cluster": "Heal"})).await;
        wait_all_alive(&nodes, 30, state).await;
        // And it stays that way: no member flaps back to suspect.
        for s in 0..10 {
            for n in nodes {
                let m = n.admin(json!({"Cluster": "Members"})).await;
                let states: Vec<&str> = m
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["state"].as_str().unwrap())
                    .collect();
                assert_eq!(
                    states,
                    ["alive", "alive"],
                    "{} {s} s after settling (partition until {state}): {m}",
                    n.gossip
                );
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
}

/// Waits until every node sees all others alive; panics with every view after `secs`.
async fn wait_all_alive(nodes: &[&TestNode], secs: u64, what: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let mut all = true;
        for n in nodes {
            all &= n.alive_members().await == nodes.len() - 1;
        }
        if all {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let mut views = String::new();
            for n in nodes {
                views += &format!(
                    "\n{}: {}",
                    n.gossip,
                    n.admin(json!({"Cluster": "Members"})).await
                );
            }
            panic!("not every node sees all others alive {secs} s after healing a partition (until {what}):{views}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
