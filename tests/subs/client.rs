//! A validating subscription client: it reads a subscription stream incrementally, checks
//! every event against the protocol (shapes, contiguous change ids, row-id lifetimes, `delete`
//! carrying the last values) and rebuilds the result set (row id → cells) from the events, so
//! tests can compare it with a fresh `POST /v1/queries` of the same SQL.

use crate::support::{Api, LineStream, Next};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Time limit for one expected event.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(15);
/// Time limit for a subscription to catch up with the database after writes.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(20);

/// One `change` event.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: String,
    pub row_id: u64,
    pub cells: Vec<Value>,
    pub id: u64,
}

/// Parses `{"change":[kind,row_id,[cells],change_id]}` (panics on any other shape).
pub fn parse_change(ev: &Value) -> Change {
    let arr = ev
        .get("change")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("expected a change event, got {ev}"));
    assert_eq!(ev.as_object().map(|o| o.len()), Some(1), "one key: {ev}");
    assert_eq!(
        arr.len(),
        4,
        "change is [kind, row_id, cells, change_id]: {ev}"
    );
    let kind = arr[0].as_str().expect("change kind string").to_string();
    assert!(
        ["insert", "update", "delete"].contains(&kind.as_str()),
        "unknown change kind: {ev}"
    );
    Change {
        kind,
        row_id: arr[1].as_u64().unwrap_or_else(|| panic!("row id: {ev}")),
        cells: arr[2]
            .as_array()
            .unwrap_or_else(|| panic!("cells: {ev}"))
            .clone(),
        id: arr[3].as_u64().unwrap_or_else(|| panic!("change id: {ev}")),
    }
}

/// Is `s` a hyphenated lowercase UUID?
pub fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && groups.iter().all(|g| {
            g.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        })
}

/// Is `s` 16 lowercase hex digits?
pub fn is_hash(s: &str) -> bool {
    s.len() == 16
        && s.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// Rows as a sorted multiset (for order-insensitive comparison).
pub fn multiset<'a>(rows: impl IntoIterator<Item = &'a Vec<Value>>) -> Vec<String> {
    let mut v: Vec<String> = rows
        .into_iter()
        .map(|r| Value::Array(r.clone()).to_string())
        .collect();
    v.sort();
    v
}

/// A subscription stream and the client state rebuilt from it.
pub struct Sub {
    pub id: String,
    pub hash: String,
    pub columns: Vec<String>,
    /// row id → current cells (meaningful only if the stream started with a snapshot).
    pub rows: BTreeMap<u64, Vec<Value>>,
    /// The `change_id` of the snapshot's `eoq` (0 for a stream without a snapshot).
    pub eoq_change_id: u64,
    /// Row ids ever seen (a deleted row's id must never come back).
    pub seen_ids: std::collections::BTreeSet<u64>,
    /// The last change id received (or the snapshot's / the `from` we resumed after).
    pub last: u64,
    /// Every change received, in order.
    pub changes: Vec<Change>,
    /// Whether `rows` is the full result (a snapshot was received).
    pub has_snapshot: bool,
    pub stream: LineStream,
}

impl Sub {
    /// Wraps a 200 subscription response; checks the id/hash headers.
    pub async fn from_stream(stream: LineStream) -> Sub {
        if stream.status.as_u16() != 200 {
            let what = stream.what.clone();
            let r = stream.into_resp(EVENT_TIMEOUT).await;
            panic!("{what}: expected 200, got {}: {}", r.status, r.text());
        }
        let id = stream
            .header("corro-query-id")
            .unwrap_or_else(|| panic!("{}: no corro-query-id header", stream.what))
            .to_string();
        assert!(
            is_uuid(&id),
            "corro-query-id is not a lowercase UUID: {id:?}"
        );
        let hash = stream
            .header("corro-query-hash")
            .unwrap_or_else(|| panic!("{}: no corro-query-hash header", stream.what))
            .to_string();
        assert!(
            is_hash(&hash),
            "corro-query-hash is not 16 hex digits: {hash:?}"
        );
        Sub {
            id,
            hash,
            columns: Vec::new(),
            rows: BTreeMap::new(),
            eoq_change_id: 0,
            seen_ids: Default::default(),
            last: 0,
            changes: Vec::new(),
            has_snapshot: false,
            stream,
        }
    }

    /// `POST /v1/subscriptions` (+ `query`, e.g. `?skip_rows=true`), expecting a snapshot.
    pub async fn post(api: &Api, stmt: &Value) -> Sub {
        let mut s = Sub::from_stream(api.open_post("/v1/subscriptions", stmt).await).await;
        s.read_snapshot().await;
        s
    }

    /// `GET /v1/subscriptions/{id}`, expecting a snapshot.
    pub async fn get(api: &Api, id: &str) -> Sub {
        let s = api.open_get(&format!("/v1/subscriptions/{id}")).await;
        let mut s = Sub::from_stream(s).await;
        assert_eq!(s.id, id, "GET answered for another subscription");
        s.read_snapshot().await;
        s
    }

    /// `GET /v1/subscriptions/{id}` as given (not checked against the returned id); the
    /// snapshot is left unread.
    pub async fn get_any(api: &Api, id: &str) -> Sub {
        Sub::from_stream(api.open_get(&format!("/v1/subscriptions/{id}")).await).await
    }

    /// `GET /v1/subscriptions/{id}?from=N`: only changes after `from` follow.
    pub async fn resume(api: &Api, id: &str, from: u64) -> Sub {
        let s = api
            .open_get(&format!("/v1/subscriptions/{id}?from={from}"))
            .await;
        let mut s = Sub::from_stream(s).await;
        assert_eq!(s.id, id, "GET answered for another subscription");
        s.last = from;
        s
    }

    /// `GET /v1/subscriptions/{id}?from=<prev.last>`, continuing `prev`'s client state (so
    /// the resumed events are validated against it and [`Sub::sync`] works).
    pub async fn resume_state(api: &Api, prev: &Sub) -> Sub {
        let mut s = Sub::resume(api, &prev.id, prev.last).await;
        assert_eq!(s.hash, prev.hash, "hash changed on resume");
        s.columns = prev.columns.clone();
        s.rows = prev.rows.clone();
        s.seen_ids = prev.seen_ids.clone();
        s.has_snapshot = prev.has_snapshot;
        s
    }

    /// Reads `columns`, `row`s and `eoq`.
    pub async fn read_snapshot(&mut self) {
        let first = self.stream.expect_line(EVENT_TIMEOUT).await;
        let cols = first
            .get("columns")
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("first event must be columns, got {first}"));
        self.columns = cols
            .iter()
            .map(|c| c.as_str().expect("column name").to_string())
            .collect();
        loop {
            let ev = self.stream.expect_line(EVENT_TIMEOUT).await;
            if let Some(r) = ev.get("row") {
                let pair = r.as_array().expect("row is [id, cells]");
                assert_eq!(pair.len(), 2, "row is [id, cells]: {ev}");
                let rid = pair[0].as_u64().unwrap_or_else(|| panic!("row id: {ev}"));
                let cells = pair[1].as_array().expect("cells").clone();
                assert_eq!(cells.len(), self.columns.len(), "row width: {ev}");
                assert!(
                    self.rows.insert(rid, cells).is_none(),
                    "duplicate row id: {ev}"
                );
                self.seen_ids.insert(rid);
            } else if let Some(e) = ev.get("eoq") {
                assert!(e["time"].is_number(), "eoq time: {ev}");
                self.eoq_change_id = e["change_id"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("eoq change_id must be an integer: {ev}"));
                self.last = self.eoq_change_id;
                self.has_snapshot = true;
                return;
            } else {
                panic!("expected row or eoq in the snapshot, got {ev}");
            }
        }
    }

    /// Validates a change against the state and applies it.
    pub fn apply(&mut self, c: &Change) {
        assert_eq!(
            c.id,
            self.last + 1,
            "change ids must be contiguous (previous {}): {c:?}",
            self.last
        );
        self.last = c.id;
        if !self.columns.is_empty() {
            assert_eq!(c.cells.len(), self.columns.len(), "change width: {c:?}");
        }
        if self.has_snapshot {
            match c.kind.as_str() {
                "insert" => {
                    assert!(
                        self.seen_ids.insert(c.row_id),
                        "insert reuses row id {}: {c:?}",
                        c.row_id
                    );
                    self.rows.insert(c.row_id, c.cells.clone());
                }
                "update" => {
                    let old = self
                        .rows
                        .insert(c.row_id, c.cells.clone())
                        .unwrap_or_else(|| panic!("update of an unknown row: {c:?}"));
                    assert_ne!(old, c.cells, "update without a value change: {c:?}");
                }
                "delete" => {
                    let old = self
                        .rows
                        .remove(&c.row_id)
                        .unwrap_or_else(|| panic!("delete of an unknown row: {c:?}"));
                    assert_eq!(old, c.cells, "delete must carry the row's last values");
                }
                _ => unreachable!(),
            }
        }
        self.changes.push(c.clone());
    }

    /// The next change within `timeout` (None on timeout); panics on anything else.
    pub async fn try_change(&mut self, timeout: Duration) -> Option<Change> {
        match self.stream.poll_line(timeout).await {
            Next::Timeout => None,
            Next::Line(ev) => {
                let c = parse_change(&ev);
                self.apply(&c);
                Some(c)
            }
            Next::End => panic!("{}: stream ended, expected a change", self.stream.what),
            Next::Failed(e) => panic!("{}: stream failed: {e}", self.stream.what),
        }
    }

    /// The next change; panics if none arrives within [`EVENT_TIMEOUT`].
    pub async fn change(&mut self) -> Change {
        match self.try_change(EVENT_TIMEOUT).await {
            Some(c) => c,
            None => panic!(
                "{}: no change within {EVENT_TIMEOUT:?} (last id {})",
                self.stream.what, self.last
            ),
        }
    }

    /// Reads changes until the last change id is `id`.
    pub async fn until_id(&mut self, id: u64) {
        while self.last < id {
            self.change().await;
        }
        assert_eq!(self.last, id, "overshot the expected change id");
    }

    /// The current result as a multiset.
    pub fn state(&self) -> Vec<String> {
        multiset(self.rows.values())
    }

    /// Reads changes until the rebuilt result equals a fresh run of `stmt` (as a multiset).
    pub async fn sync(&mut self, api: &Api, stmt: &Value) {
        assert!(self.has_snapshot, "sync needs a snapshot");
        let want = multiset(&api.rows(stmt).await);
        let deadline = tokio::time::Instant::now() + SYNC_TIMEOUT;
        while self.state() != want {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if self.try_change(left).await.is_none() {
                panic!(
                    "{}: subscription of {stmt} did not converge within {SYNC_TIMEOUT:?}\n\
                     subscription: {:?}\nquery:        {want:?}\nlast changes: {:?}",
                    self.stream.what,
                    self.state(),
                    &self.changes[self.changes.len().saturating_sub(10)..]
                );
            }
        }
    }

    /// Asserts the next event is the in-stream error containing `needle`, then the end.
    pub async fn expect_error_end(&mut self, needle: &str) -> String {
        let ev = self.stream.expect_line(EVENT_TIMEOUT).await;
        let msg = ev
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("expected an in-stream error, got {ev}"))
            .to_string();
        assert!(
            msg.to_lowercase().contains(&needle.to_lowercase()),
            "error should mention {needle:?}: {msg:?}"
        );
        self.stream.expect_end(EVENT_TIMEOUT).await;
        msg
    }
}

/// Sorted cells of the given rows map, for comparing two subscribers' states exactly.
pub fn rows_json(rows: &BTreeMap<u64, Vec<Value>>) -> Value {
    json!(rows.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>())
}
