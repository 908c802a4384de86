//! The watchdog on real processes, stalls injected through the debug-build admin hook
//! (`{"Debug":{"Stall":…}}`): in report-only mode a held writer lock makes `/v1/health`
//! unhealthy and is counted, then clears; by default a stalled runtime makes the node exit
//! with status 70, and the restarted node rejoins with nothing lost.

use crate::node::{converge, eventually, serial, Dir};
use hyper::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_only_mode_reports_a_stuck_writer_then_recovers() {
    let _serial = serial();
    let d = Dir::new("[watchdog]\nwriter_stall_secs = 1\nexit = false\nexit_after_secs = 1\n");
    let mut n = d.start(&[], 0);
    let api = n.http();
    assert_eq!(api.get("/v1/health").await.status, StatusCode::OK);
    let r = n
        .admin(json!({"Debug": {"Stall": {"what": "writer", "secs": 5}}}))
        .await;
    assert!(r["stalling"].is_object(), "{r}");
    eventually(10, "health to report the stall", || async {
        let h = api.get("/v1/health").await;
        h.status == StatusCode::SERVICE_UNAVAILABLE && h.text().contains("writer lock")
    })
    .await;
    let m = api.get("/metrics").await.text();
    assert!(m.contains("verdigris_watchdog_stalled 1"), "{m}");
    // Well past exit_after_secs: report-only mode keeps the node running.
    eventually(15, "the node to recover", || async {
        api.get("/v1/health").await.status == StatusCode::OK
    })
    .await;
    assert!(n.wait_exit(0).is_none(), "the node must not exit");
    let m = api.get("/metrics").await.text();
    assert!(
        m.contains("verdigris_watchdog_stalls_total{kind=\"writer\"} 1"),
        "{m}"
    );
    assert!(m.contains("verdigris_watchdog_stalled 0"), "{m}");
    assert!(d.log().contains("NODE STALLED"), "logged loudly");
    n.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_runtime_exits_70_and_the_restarted_node_rejoins_with_nothing_lost() {
    let _serial = serial();
    let (da, db) = (
        Dir::new(""),
        Dir::new("[watchdog]\nruntime_stall_secs = 1\nexit_after_secs = 1\n"),
    );
    let a = da.start(&[], 0);
    let mut b = db.start(&[a.gossip], 0);
    eventually(30, "A and B to see each other", || async {
        a.alive_members().await == 1 && b.alive_members().await == 1
    })
    .await;
    a.insert("a", 0..20).await;
    b.insert("b", 100..120).await;
    let mut want: Vec<i64> = (0..20).chain(100..120).collect();
    converge(&[&a, &b], &want, 30).await;

    b.admin(json!({"Debug": {"Stall": {"what": "runtime", "secs": 60}}}))
        .await;
    let status = b.wait_exit(30).expect("the stalled node exits");
    assert_eq!(status.code(), Some(70), "{status}");
    let log = db.log();
    assert!(log.contains("async runtime stalled"), "{log}");
    assert!(log.contains("exiting with status 70"), "{log}");

    // Writes go on while B is down; B comes back (as a supervisor would restart it).
    a.insert("a", 20..40).await;
    want.extend(20..40);
    want.sort();
    let gossip = b.gossip;
    drop(b);
    let b = db.start(&[a.gossip], gossip.port());
    converge(&[&a, &b], &want, 60).await;
    b.insert("b", 120..125).await;
    want.extend(120..125);
    converge(&[&a, &b], &want, 30).await;
}
