//! Cluster commands of the admin socket:
//!
//! - `{"Cluster":"Members"}` → `[{actor_id, address, state, rtt_ms}]`;
//! - `{"Cluster":"Stats"}` → counters of rejected/dropped input, gaps, queue;
//! - `{"Cluster":{"Partition":["ip:port", …]}}` → drop all traffic to and from those peers
//!   (fault injection for tests); `{"Cluster":"Heal"}` lifts it.

use super::status::Status;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

/// Handles a `{"Cluster": …}` command; `None` if `cmd` is not one.
pub fn handle(status: &Status, cmd: &Value) -> Option<Result<Value, String>> {
    let c = cmd.as_object()?.get("Cluster")?;
    Some(match c {
        Value::String(s) if s == "Members" => {
            let members = status.members.read().expect("members lock");
            Ok(Value::Array(
                members
                    .iter()
                    .map(|m| {
                        json!({
                            "actor_id": m.actor_id,
                            "address": m.address.to_string(),
                            "state": m.state,
                            "rtt_ms": m.rtt_ms,
                        })
                    })
                    .collect(),
            ))
        }
        Value::String(s) if s == "Stats" => {
            let k = &status.counters;
            let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            let (samples, p50, p99) = status.lag_summary();
            Ok(json!({
                "lag_samples": samples,
                "lag_p50_secs": p50,
                "lag_p99_secs": p99,
                "gossip_addr": status.gossip_addr.get().map(|a| a.to_string()),
                "malformed": get(&k.malformed),
                "wrong_cluster": get(&k.wrong_cluster),
                "swim_rejected": get(&k.swim_rejected),
                "inbound_dropped": get(&k.inbound_dropped),
                "broadcast_dropped": get(&k.broadcast_dropped),
                "changes_dropped": get(&k.changes_dropped),
                "changes_ingested": get(&k.changes_ingested),
                "syncs": get(&k.syncs),
                "gaps": get(&status.gaps),
                "queue_size": get(&status.queue_size),
            }))
        }
        Value::String(s) if s == "Heal" => {
            status.blocked.write().expect("blocked lock").clear();
            Ok(json!({"blocked": []}))
        }
        Value::Object(o) if o.contains_key("Partition") => partition(status, &o["Partition"]),
        other => Err(format!(
            "unknown cluster command {other}; known: \"Members\", \"Stats\", \"Heal\", {{\"Partition\":[\"ip:port\"]}}"
        )),
    })
}

fn partition(status: &Status, list: &Value) -> Result<Value, String> {
    let addrs: Vec<SocketAddr> = list
        .as_array()
        .ok_or("Partition takes a list of \"ip:port\" strings")?
        .iter()
        .map(|v| {
            v.as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("{v} is not an \"ip:port\" address"))
        })
        .collect::<Result<_, _>>()?;
    let mut b = status.blocked.write().expect("blocked lock");
    b.extend(addrs);
    Ok(json!({"blocked": b.iter().map(|a| a.to_string()).collect::<Vec<_>>()}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_and_heal_flip_the_fault_switch() {
        let s = Status::default();
        let a: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let r = handle(&s, &json!({"Cluster": {"Partition": ["127.0.0.1:9"]}}));
        assert!(r.unwrap().is_ok());
        assert!(s.is_blocked(&a));
        assert!(handle(&s, &json!({"Cluster": {"Partition": ["nope"]}}))
            .unwrap()
            .is_err());
        assert!(handle(&s, &json!({"Cluster": "Heal"})).unwrap().is_ok());
        assert!(!s.is_blocked(&a));
        assert_eq!(
            handle(&s, &json!({"Cluster": "Members"})),
            Some(Ok(json!([])))
        );
        assert!(handle(&s, &json!("Ping")).is_none());
    }
}
