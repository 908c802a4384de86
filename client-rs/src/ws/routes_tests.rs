//! Demultiplexing: delivery by id, a full consumer never blocks the others, reconnects.

use super::*;
use crate::types::ws::{Empty, ServerMessage};
use crate::types::{ChangeType, ExecResponse};
use crate::ws::{route_channel, Feed};
use serde_json::json;

const LIMITS: Limits = Limits {
    changes: 3,
    bytes: 1000,
};

fn sub_cmd(id: &str, resume: Option<Resume>) -> (Cmd, Feed) {
    let (feed, to) = route_channel(id.into());
    (
        Cmd::Subscribe {
            id: id.into(),
            stmt: Statement::with_params("SELECT * FROM t WHERE a = ?", [1]),
            skip_rows: false,
            resume,
            to,
        },
        feed,
    )
}

fn query_cmd(id: &str, timeout: Option<f64>) -> (Cmd, Feed) {
    let (feed, to) = route_channel(id.into());
    (
        Cmd::Query {
            id: id.into(),
            stmt: "SELECT 1".into(),
            timeout,
            to,
        },
        feed,
    )
}

fn change(id: &str, cid: u64) -> RawMessage {
    ServerMessage::new(
        Some(id.into()),
        ServerBody::Change(ChangeType::Insert, cid, json!([cid]), cid),
    )
}

fn msg(r: &mut Routes, m: RawMessage, out: &mut VecDeque<ClientMessage>) {
    r.message(m, 10, out);
}

fn drain(feed: &mut Feed) -> Vec<Item> {
    let mut v = Vec::new();
    while let Some(i) = feed.try_recv() {
        v.push(i);
    }
    v
}

#[test]
fn offline_commands_wait_for_the_connection() {
    let mut r = Routes::new(100, LIMITS);
    let mut out = VecDeque::new();
    let (cmd, mut rx) = sub_cmd("s1", None);
    r.command(cmd, None, &mut out);
    assert!(out.is_empty());
    r.connected(3, &mut out);
    assert_eq!(out.len(), 1);
    let sent = serde_json::to_value(&out[0]).unwrap();
    assert_eq!(
        sent,
        json!({"type": "subscribe", "id": "s1", "sql": "SELECT * FROM t WHERE a = ?", "params": [1]})
    );
    assert!(matches!(
        drain(&mut rx)[..],
        [Item::Started {
            node: 3,
            resumed: false
        }]
    ));
}

#[test]
fn resume_only_on_the_same_node() {
    let mut r = Routes::new(100, LIMITS);
    let mut out = VecDeque::new();
    let resume = Resume {
        node: 1,
        query_id: Some("qid".into()),
        from: 41,
    };
    let (cmd, mut rx) = sub_cmd("s1", Some(resume.clone()));
    r.command(cmd, Some(1), &mut out);
    assert_eq!(
        serde_json::to_value(&out[0]).unwrap(),
        json!({"type": "subscribe", "id": "s1", "query_id": "qid", "from": 41})
    );
    assert!(matches!(
        drain(&mut rx)[..],
        [Item::Started {
            node: 1,
            resumed: true
        }]
    ));
    // On another node the old position means nothing: a fresh subscription.
    let (cmd, mut rx) = sub_cmd("s2", Some(resume));
    r.command(cmd, Some(2), &mut out);
    let v = serde_json::to_value(&out[1]).unwrap();
    assert!(
        v.get("from").is_none() && v.get("query_id").is_none(),
        "{v}"
    );
    assert!(matches!(
        drain(&mut rx)[..],
        [Item::Started {
            node: 2,
            resumed: false
        }]
    ));
    // Without a query id (skip_rows: no columns message named it), resume by SQL.
    let (cmd, _rx) = sub_cmd(
        "s3",
        Some(Resume {
            node: 2,
            query_id: None,
            from: 7,
        }),
    );
    r.command(cmd, Some(2), &mut out);
    let v = serde_json::to_value(&out[2]).unwrap();
    assert_eq!(v["from"], 7);
    assert!(v["sql"].is_string());
}

#[test]
fn a_full_consumer_is_cut_off_without_blocking_the_others() {
    let mut r = Routes::new(100, LIMITS);
    let mut out = VecDeque::new();
    let (slow, mut slow_rx) = sub_cmd("s1", None);
    let (fast, mut fast_rx) = sub_cmd("s2", None);
    r.command(slow, Some(0), &mut out);
    r.command(fast, Some(0), &mut out);
    out.clear();
    drain(&mut fast_rx);
    // s1's channel holds Started + 3 changes; the 4th change finds it full.
    for cid in 1..=10 {
        msg(&mut r, change("s1", cid), &mut out);
        msg(&mut r, change("s2", cid), &mut out);
        // The fast consumer keeps reading.
        assert_eq!(drain(&mut fast_rx).len(), 1);
    }
    assert_eq!(r.len(), 1, "the slow route was dropped");
    assert_eq!(
        out.iter()
            .map(|m| serde_json::to_value(m).unwrap())
            .collect::<Vec<_>>(),
        vec![json!({"type": "unsubscribe", "id": "s1"})]
    );
    // The slow consumer reads what it had, then sees its channel closed as Behind.
    let items = drain(&mut slow_rx);
    assert_eq!(items.len(), 4);
    assert!(slow_rx.try_recv().is_none());
    assert!(matches!(slow_rx.end.take(), Some(EndReason::Behind)));
    // Late messages for the dropped id (before the node's `unsubscribed`) are ignored.
    msg(&mut r, change("s1", 11), &mut out);
    msg(
        &mut r,
        ServerMessage::new(Some("s1".into()), ServerBody::Unsubscribed(Empty {})),
        &mut out,
    );
    assert_eq!(out.len(), 1);
}

#[test]
fn errors_end_a_subscription_route() {
    let mut r = Routes::new(100, LIMITS);
    let mut out = VecDeque::new();
    let (cmd, mut rx) = sub_cmd("s1", None);
    r.command(cmd, Some(0), &mut out);
    out.clear();
    let mut e = ServerMessage::error(Some("s1".into()), ErrorCode::TooSlow, "slow");
    e.last_change_id = Some(5);
    msg(&mut r, e, &mut out);
    assert!(r.is_empty());
    assert!(out.is_empty(), "the node already ended it: no unsubscribe");
    let items = drain(&mut rx);
    assert!(matches!(&items[1], Item::Msg { msg: m, .. } if m.last_change_id == Some(5)));
    assert!(matches!(rx.end.take(), Some(EndReason::Ended)));
}

#[test]
fn queries_end_at_eoq_and_fail_when_full() {
    let mut r = Routes::new(100, LIMITS);
    let mut out = VecDeque::new();
    let (cmd, mut rx) = query_cmd("q1", Some(2.0));
    r.command(cmd, Some(0), &mut out);
    assert_eq!(
        serde_json::to_value(&out[0]).unwrap(),
        json!({"type": "query", "id": "q1", "sql": "SELECT 1", "timeout": 2.0})
    );
    msg(
        &mut r,
        ServerMessage::new(Some("q1".into()), ServerBody::Columns(vec!["1".into()])),
        &mut out,
    );
    assert_eq!(drain(&mut rx).len(), 1);
    // Rows are bounded by bytes, not by the change count: a large result read at the
    // consumer's pace is fine.
    for i in 0..50 {
        msg(
            &mut r,
            ServerMessage::new(Some("q1".into()), ServerBody::Row(i, json!([i]))),
            &mut out,
        );
        assert_eq!(drain(&mut rx).len(), 1);
    }
    let eoq = ServerBody::EndOfQuery {
        time: 0.0,
        change_id: None,
    };
    msg(&mut r, ServerMessage::new(Some("q1".into()), eoq), &mut out);
    assert!(r.is_empty());
    assert_eq!(drain(&mut rx).len(), 1);
    assert!(matches!(rx.end.take(), Some(EndReason::Ended)));

    // A consumer that does not read: abandoned once its bytes exceed the budget.
    let (cmd, mut rx) = query_cmd("q2", None);
    r.command(cmd, Some(0), &mut out);
    for i in 0..(LIMITS.bytes / 10 + 1) as u64 {
        msg(
            &mut r,
            ServerMessage::new(Some("q2".into()), ServerBody::Row(i, json!([i]))),
            &mut out,
        );
    }
    assert!(r.is_empty());
    assert_eq!(drain(&mut rx).len(), LIMITS.bytes / 10);
    assert!(matches!(
        rx.end.take(),
        Some(EndReason::Failed(Error::Lagged))
    ));
}

#[tokio::test]
async fn requests_get_their_reply_or_fail_on_disconnect() {
    let mut r = Routes::new(100, LIMITS);
    let mut out = VecDeque::new();
    let (reply, rx) = oneshot::channel();
    r.command(
        Cmd::Request {
            msg: ClientMessage::Ping { id: "p1".into() },
            reply,
        },
        Some(0),
        &mut out,
    );
    msg(
        &mut r,
        ServerMessage::new(Some("p1".into()), ServerBody::Pong(Empty {})),
        &mut out,
    );
    assert!(matches!(
        rx.await.unwrap().unwrap().body,
        ServerBody::Pong(_)
    ));

    let (reply, rx) = oneshot::channel();
    let tx_msg = ClientMessage::Transaction {
        id: "t1".into(),
        statements: vec!["INSERT INTO t VALUES (1)".into()],
        timeout: None,
    };
    r.command(Cmd::Request { msg: tx_msg, reply }, Some(0), &mut out);
    // A reply of the wrong kind does not complete it.
    msg(
        &mut r,
        ServerMessage::new(Some("t1".into()), ServerBody::Columns(vec![])),
        &mut out,
    );
    assert_eq!(r.len(), 1);
    r.disconnected("reset");
    assert!(matches!(
        rx.await.unwrap(),
        Err(Error::ConnectionLost { .. })
    ));

    let (reply, rx) = oneshot::channel();
    r.command(
        Cmd::Request {
            msg: ClientMessage::Transaction {
                id: "t2".into(),
                statements: vec![],
                timeout: None,
            },
            reply,
        },
        Some(0),
        &mut out,
    );
    let ok = ExecResponse {
        error: None,
        results: vec![],
        time: 0.0,
        version: Some(3),
        actor_id: None,
    };
    msg(
        &mut r,
        ServerMessage::new(Some("t2".into()), ServerBody::Transaction(ok.clone())),
        &mut out,
    );
    assert!(matches!(rx.await.unwrap().unwrap().body, ServerBody::Transaction(r) if r == ok));
}

#[test]
fn disconnect_tells_sent_subscriptions_and_keeps_unsent_ones() {
    let mut r = Routes::new(100, LIMITS);
    let mut out = VecDeque::new();
    let (sent, mut sent_rx) = sub_cmd("s1", None);
    r.command(sent, Some(0), &mut out);
    r.disconnected("gone");
    let (unsent, _unsent_rx) = sub_cmd("s2", None);
    r.command(unsent, None, &mut out);
    drain(&mut sent_rx);
    assert!(sent_rx.try_recv().is_none());
    assert!(matches!(sent_rx.end.take(), Some(EndReason::Disconnected)));
    assert_eq!(r.len(), 1);
    out.clear();
    r.connected(1, &mut out);
    assert_eq!(out.len(), 1);
}

#[test]
fn cancel_sweep_limits_and_failures() {
    let mut r = Routes::new(2, LIMITS);
    let mut out = VecDeque::new();
    let (a, _a_rx) = sub_cmd("s1", None);
    let (b, b_rx) = sub_cmd("s2", None);
    let (c, mut c_rx) = sub_cmd("s3", None);
    r.command(a, Some(0), &mut out);
    r.command(b, Some(0), &mut out);
    r.command(c, Some(0), &mut out);
    assert!(matches!(
        c_rx.end.take(),
        Some(EndReason::Failed(Error::Server {
            code: Some(ErrorCode::Limit),
            ..
        }))
    ));
    assert!(c_rx.try_recv().is_none());
    out.clear();
    r.command(Cmd::Cancel { id: "s1".into() }, Some(0), &mut out);
    assert_eq!(
        serde_json::to_value(&out[0]).unwrap(),
        json!({"type": "unsubscribe", "id": "s1"})
    );
    // A consumer dropped without a cancel is found by the sweep.
    drop(b_rx);
    r.sweep(true, &mut out);
    assert!(r.is_empty());
    assert_eq!(out.len(), 2);
    // Unreachable nodes fail everything pending.
    let (d, _d_rx) = sub_cmd("s4", None);
    r.command(d, None, &mut out);
    r.fail_all(&Error::Connect {
        addr: "x:1".into(),
        source: "refused".into(),
    });
    assert!(matches!(
        _d_rx.end.take(),
        Some(EndReason::Failed(Error::Connect { .. }))
    ));
}

#[test]
fn server_messages_with_json_cells_decode() {
    let m: RawMessage =
        serde_json::from_str(r#"{"id":"s1","change":["update",3,[1,"x",[0,255]],9]}"#).unwrap();
    assert!(
        matches!(m.body, ServerBody::Change(ChangeType::Update, 3, ref v, 9) if v == &json!([1, "x", [0, 255]]))
    );
    let m: RawMessage =
        serde_json::from_str(r#"{"id":"s1","columns":["a"],"query_id":"q","hash":"h"}"#).unwrap();
    assert_eq!(
        (m.query_id.as_deref(), m.hash.as_deref()),
        (Some("q"), Some("h"))
    );
    let m: RawMessage =
        serde_json::from_str(r#"{"error":"bad json","code":"bad_request"}"#).unwrap();
    assert!(m.id.is_none() && m.code == Some(ErrorCode::BadRequest));
}
