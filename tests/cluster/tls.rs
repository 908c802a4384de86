//! Gossip over TLS with a CA and mutual TLS, using certificates from `verdigris tls … generate`.

use crate::support::*;
use serde_json::json;
use std::path::Path;
use std::process::Command;

fn cli(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_verdigris"))
        .args(args)
        .output()
        .expect("running verdigris");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tls_section(certs: &Path) -> String {
    let p = |f: &str| certs.join(f).display().to_string();
    format!(
        "[gossip.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\n\
         [gossip.tls.client]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        p("server_cert.pem"),
        p("server_key.pem"),
        p("ca_cert.pem"),
        p("client_cert.pem"),
        p("client_key.pem")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_cluster_converges_and_rejects_strangers() {
    let _serial = serial().await;
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path().to_str().unwrap();
    let key = certs.path().join("ca_key.pem");
    let key = key.to_str().unwrap();
    cli(&["tls", "ca", "generate", "--output-path", dir]);
    cli(&[
        "tls",
        "server",
        "generate",
        "127.0.0.1",
        "--ca-key",
        key,
        "--output-path",
        dir,
    ]);
    cli(&[
        "tls",
        "client",
        "generate",
        "--ca-key",
        key,
        "--output-path",
        dir,
    ]);
    let tls = tls_section(certs.path());
    let (da, db, dx) = (NodeDir::new(), NodeDir::new(), NodeDir::new());
    let a = da.start_with(&[], 0, &tls);
    let b = db.start_with(&[a.gossip], 0, &tls);
    wait_for_mesh(&[&a, &b]).await;
    a.exec(json!([["INSERT INTO items (id, owner) VALUES (1, 'a')"]]))
        .await;
    wait_converged(&[&a, &b], "SELECT id, owner FROM items", 30).await;
    // A plaintext node (no client certificate, unverifiable server) cannot join.
    let x = dx.start(&[a.gossip]);
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert_eq!(
        x.alive_members().await,
        0,
        "a node without certificates joined"
    );
    assert_eq!(a.alive_members().await, 1);
    assert_eq!(x.count("items").await, 0);
}
