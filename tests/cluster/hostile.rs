//! A misbehaving peer (random bytes, truncated frames, absurd lengths, another cluster id) is
//! rejected and counted; the node keeps serving.

use crate::support::*;
use serde_json::json;
use std::sync::Arc;
use verdigris::cluster::codec::{self, Msg};
use verdigris::crdt::ActorId;

async fn hostile_connection(target: std::net::SocketAddr) -> quinn::Connection {
    let mut g = verdigris::config::Config::default_with_env(std::iter::empty::<(String, String)>())
        .expect("default config")
        .0
        .gossip;
    g.addr = "127.0.0.1:0".parse().unwrap();
    let (server, client) = verdigris::cluster::tls::endpoint_configs(&g).expect("tls");
    let mut ep = quinn::Endpoint::server(server, g.addr).expect("endpoint");
    ep.set_default_client_config(client);
    ep.connect(target, "localhost")
        .expect("connect")
        .await
        .expect("handshake")
}

async fn send_stream(conn: &quinn::Connection, bytes: &[u8]) {
    let mut s = conn.open_uni().await.expect("uni");
    let _ = s.write_all(bytes).await;
    let _ = s.finish();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), s.stopped()).await;
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peer_input_is_rejected_and_counted() {
    let _serial = serial().await;
    let d = NodeDir::new();
    let node = d.start(&[]);
    let conn = Arc::new(hostile_connection(node.gossip).await);
    // Datagrams: random bytes, a SWIM envelope with a garbage packet, another cluster's packet.
    for i in 0..50u8 {
        let junk: Vec<u8> = (0..(i as usize * 7))
            .map(|j| (j as u8).wrapping_mul(31) ^ i)
            .collect();
        let _ = conn.send_datagram(junk.into());
    }
    let _ = conn.send_datagram(codec::encode(&Msg::Swim(vec![0xff; 64]), 0).into());
    let _ = conn.send_datagram(codec::encode(&Msg::Swim(vec![1, 2, 3]), 9).into());
    // Streams: random payload in a frame, a truncated frame, an absurd length, a change for
    // another cluster, and a valid-looking frame of random bytes after a version byte.
    send_stream(&conn, &framed(&[7u8; 100])).await;
    send_stream(&conn, &framed(&[1u8; 100])[..50]).await;
    send_stream(&conn, &u32::MAX.to_be_bytes()).await;
    let chunk = verdigris::store::buffer::Chunk {
        actor: ActorId([9; 16]),
        version: 1,
        last_seq: 0,
        ts: 0,
        seqs: 0..=0,
        changes: vec![],
    };
    send_stream(
        &conn,
        &framed(&codec::encode(&Msg::Change { chunk, ttl: 1 }, 42)),
    )
    .await;
    let mut v1 = vec![codec::FORMAT_VERSION];
    v1.extend((0..300u32).map(|i| (i * 7919 % 251) as u8));
    send_stream(&conn, &framed(&v1)).await;
    // A sync session from another cluster.
    if let Ok((mut s, mut r)) = conn.open_bi().await {
        let start = codec::encode(
            &Msg::SyncStart {
                actor: ActorId([9; 16]),
            },
            3,
        );
        let _ = s.write_all(&framed(&start)).await;
        let _ = s.finish();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(3), r.read_to_end(1 << 20)).await;
    }
    eventually(10, "rejections to be counted", || async {
        let s = node.admin(json!({"Cluster": "Stats"})).await;
        s["malformed"].as_u64().unwrap_or(0) >= 3
            && s["wrong_cluster"].as_u64().unwrap_or(0) >= 2
            && s["swim_rejected"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    // Still serving, with nothing applied from the bogus change.
    node.exec(json!([["INSERT INTO items (id) VALUES (1)"]]))
        .await;
    assert_eq!(node.count("items").await, 1);
    assert_eq!(node.health().await["gaps"], 0);
}
