//! `verdigris dev` as a newcomer runs it: three real nodes come up, the printed subscribe
//! command's routing query streams rows the simulated workload writes, every printed URL
//! answers, and Ctrl-C (SIGINT) stops every node. A SIGKILLed dev process takes its nodes
//! with it (parent-death signal), and `--data` keeps the data between runs.

use crate::support::{command, Api, Proto, BIN};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

struct Dev {
    child: Child,
    apis: Vec<SocketAddr>,
    pids: Vec<i32>,
    out: std::sync::mpsc::Receiver<String>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn alive(pid: i32) -> bool {
    // A zombie (exited, not yet reaped by its parent) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn wait_gone(pids: &[i32], secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "node processes {pids:?} still alive after {secs} s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts `verdigris dev <args>` and reads its banner.
fn start(args: &[&str]) -> Dev {
    assert!(std::path::Path::new(BIN).exists());
    let mut child = command()
        .arg("dev")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning verdigris dev");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let (mut apis, mut pids, mut banner) = (vec![], vec![], String::new());
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(90))
            .unwrap_or_else(|_| panic!("no complete banner; got:\n{banner}"));
        banner.push_str(&line);
        banner.push('\n');
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first().is_some_and(|w| w.starts_with("node-")) {
            let after = |k: &str| words[words.iter().position(|w| *w == k).unwrap() + 1];
            let api: SocketAddr = after("api").trim_start_matches("http://").parse().unwrap();
            assert_eq!(after("ws"), format!("ws://{api}/v1/ws"));
            assert_eq!(after("console"), format!("http://{api}/"));
            apis.push(api);
            pids.push(after("pid").parse().unwrap());
        }
        if line.starts_with("Ctrl-C stops every node.") {
            break;
        }
    }
    Dev {
        child,
        apis,
        pids,
        out: rx,
    }
}

impl Dev {
    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    fn wait(&mut self, secs: u64) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "dev did not exit within {secs} s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_cluster_streams_live_routing_data_and_stops_cleanly() {
    let _serial = crate::node::serial();
    let data = tempfile::tempdir().unwrap();
    let data_arg = data.path().join("dev").display().to_string();
    let mut dev = start(&["--data", &data_arg]);
    assert_eq!(dev.apis.len(), 3, "three nodes by default");
    assert!(dev.pids.iter().all(|p| alive(*p)));

    // The printed subscribe command, on the last node: rows written by workers on every node.
    let api = Api::new(dev.apis[2], Proto::Http1);
    let q: Value = serde_json::from_str(verdigris::cli::dev::ROUTING_QUERY).unwrap();
    let mut sub = api.open_post("/v1/subscriptions", &q).await;
    assert_eq!(sub.status, hyper::StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut workers, mut changes) = (std::collections::BTreeSet::new(), 0);
    while workers.len() < 3 || changes < 3 {
        assert!(
            Instant::now() < deadline,
            "workers {workers:?}, changes {changes}"
        );
        let line = sub.expect_line(Duration::from_secs(30)).await;
        let cells = line.get("row").or_else(|| line.get("change")).cloned();
        changes += usize::from(line.get("change").is_some());
        if let Some(id) = cells.and_then(|c| {
            c.as_array()?
                .iter()
                .rev()
                .find_map(|x| x.as_array().cloned())
        }) {
            // Machine ids are m<worker>-<n>.
            workers.insert(
                id[0]
                    .as_str()
                    .unwrap()
                    .split('-')
                    .next()
                    .unwrap()
                    .to_string(),
            );
        }
    }
    // Every node serves its API and metrics.
    for a in &dev.apis {
        let api = Api::new(*a, Proto::Http1);
        assert_eq!(api.get("/v1/health").await.status, hyper::StatusCode::OK);
        assert!(api
            .get("/metrics")
            .await
            .text()
            .contains("verdigris_writes_total"));
    }
    drop(sub);

    dev.signal(libc::SIGINT);
    let status = dev.wait(40);
    assert!(status.success(), "{status}");
    wait_gone(&dev.pids, 5);
    let rest: Vec<String> = dev.out.try_iter().collect();
    assert!(rest.iter().any(|l| l == "stopped 3 nodes"), "{rest:?}");

    // --data kept the nodes' databases: a one-node, no-workload run still has the machines.
    let mut again = start(&["--data", &data_arg, "--nodes", "1", "--no-workload"]);
    assert_eq!(again.apis.len(), 1);
    let api = Api::new(again.apis[0], Proto::Http1);
    let n = api.scalar("SELECT count(*) FROM machines").await;
    assert!(n > 0, "machines kept between runs");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        api.scalar("SELECT count(*) FROM machines").await,
        n,
        "no workload"
    );
    again.signal(libc::SIGTERM);
    assert!(again.wait(30).success());
    wait_gone(&again.pids, 5);
}

#[test]
fn killing_dev_with_sigkill_stops_its_nodes() {
    let _serial = crate::node::serial();
    let data = tempfile::tempdir().unwrap();
    let data_arg = data.path().display().to_string();
    let mut dev = start(&["--nodes", "2", "--no-workload", "--data", &data_arg]);
    assert!(dev.pids.iter().all(|p| alive(*p)));
    dev.signal(libc::SIGKILL);
    let status = dev.wait(10);
    assert!(!status.success());
    wait_gone(&dev.pids, 20);
}
