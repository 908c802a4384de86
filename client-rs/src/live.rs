//! [`LiveQuery`]: a subscription folded into the current result rows, reporting what changed.

use crate::error::Result;
use crate::sub::{ResetReason, SubEvent};
use crate::subscription::Subscription;
use crate::types::{ChangeId, ChangeType, RowId};
use futures_util::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

/// Events folded into one update at most (more ready events wait for the next call).
const MAX_BATCH: usize = 4096;

/// What one [`LiveQuery::next`] changed in [`LiveQuery::rows`].
#[derive(Debug, Clone, PartialEq)]
pub struct LiveUpdate<T> {
    /// A complete snapshot replaced every row (first update, or after a reset): rebuild
    /// from [`LiveQuery::rows`]; `inserted` lists every row.
    pub snapshot: bool,
    /// Why the rows were replaced, when this snapshot follows a reset.
    pub reset: Option<ResetReason>,
    /// Rows now present that were not.
    pub inserted: Vec<RowId>,
    /// Rows whose values changed.
    pub updated: Vec<RowId>,
    /// Rows removed, with their last values.
    pub deleted: Vec<(RowId, T)>,
    /// The change id the rows are at.
    pub change_id: Option<ChangeId>,
}

impl<T> LiveUpdate<T> {
    fn new() -> Self {
        LiveUpdate {
            snapshot: false,
            reset: None,
            inserted: Vec::new(),
            updated: Vec::new(),
            deleted: Vec::new(),
            change_id: None,
        }
    }

    /// Nothing changed (and no snapshot).
    pub fn is_empty(&self) -> bool {
        !self.snapshot
            && self.inserted.is_empty()
            && self.updated.is_empty()
            && self.deleted.is_empty()
    }
}

/// The current rows of a subscription, rebuilt from its events (pure, no I/O).
///
/// While a snapshot arrives, the previous rows stay visible; they are replaced at once when
/// it is complete, so [`LiveState::rows`] is always a whole result, never a partial one.
#[derive(Debug)]
pub struct LiveState<T> {
    rows: BTreeMap<RowId, T>,
    columns: Vec<String>,
    /// The snapshot being received (`None` outside a snapshot).
    incoming: Option<BTreeMap<RowId, T>>,
    reset: Option<ResetReason>,
    change_id: Option<ChangeId>,
}

impl<T> Default for LiveState<T> {
    fn default() -> Self {
        LiveState {
            rows: BTreeMap::new(),
            columns: Vec::new(),
            incoming: None,
            reset: None,
            change_id: None,
        }
    }
}

impl<T> LiveState<T> {
    pub fn rows(&self) -> &BTreeMap<RowId, T> {
        &self.rows
    }
    pub fn columns(&self) -> &[String] {
        &self.columns
    }
    pub fn change_id(&self) -> Option<ChangeId> {
        self.change_id
    }

    /// Applies one event to the rows, recording the effect in `up`. Returns whether `up` is
    /// ready to report (a snapshot completed, or a change applied outside a snapshot).
    pub fn apply(&mut self, ev: SubEvent<T>, up: &mut LiveUpdate<T>) -> bool {
        match ev {
            SubEvent::Reset(why) => {
                self.reset = Some(why);
                self.incoming = None;
                self.change_id = None;
                false
            }
            SubEvent::Columns(c) => {
                self.columns = c;
                self.incoming = Some(BTreeMap::new());
                false
            }
            SubEvent::Row(rid, row) => {
                match &mut self.incoming {
                    Some(m) => {
                        m.insert(rid, row);
                    }
                    None => {
                        // A row outside a snapshot (not sent by nodes): an upsert.
                        self.upsert(rid, row, up);
                    }
                }
                false
            }
            SubEvent::EndOfQuery { change_id } => {
                self.change_id = change_id;
                if let Some(m) = self.incoming.take() {
                    self.rows = m;
                    *up = LiveUpdate::new();
                    up.snapshot = true;
                    up.reset = self.reset.take();
                    up.inserted = self.rows.keys().copied().collect();
                }
                up.change_id = change_id;
                true
            }
            SubEvent::Change(kind, rid, row, cid) => {
                if self.reset.is_some() && self.incoming.is_none() {
                    // A reset without a snapshot (skip_rows): the rows are unknown.
                    self.rows.clear();
                    up.snapshot = true;
                    up.reset = self.reset.take();
                }
                self.change_id = Some(cid);
                up.change_id = Some(cid);
                match kind {
                    ChangeType::Insert | ChangeType::Update => self.upsert(rid, row, up),
                    ChangeType::Delete => {
                        let last = self.rows.remove(&rid).unwrap_or(row);
                        // Inserted then deleted within one update: report nothing.
                        if let Some(i) = up.inserted.iter().position(|r| *r == rid) {
                            up.inserted.swap_remove(i);
                        } else {
                            up.updated.retain(|r| *r != rid);
                            up.deleted.push((rid, last));
                        }
                    }
                }
                self.incoming.is_none()
            }
        }
    }

    fn upsert(&mut self, rid: RowId, row: T, up: &mut LiveUpdate<T>) {
        if self.rows.insert(rid, row).is_some() {
            if !up.inserted.contains(&rid) && !up.updated.contains(&rid) {
                up.updated.push(rid);
            }
        } else if let Some(i) = up.deleted.iter().position(|(r, _)| *r == rid) {
            // Deleted then re-inserted (same row id) within one update: an update.
            up.deleted.swap_remove(i);
            up.updated.push(rid);
        } else {
            up.inserted.push(rid);
        }
    }
}

/// A subscription kept as a map of its current rows.
///
/// ```no_run
/// # async fn f() -> verdigris_client::Result<()> {
/// use verdigris_client::{Client, SubscribeOptions};
///
/// let client = Client::new(["127.0.0.1:8080"])?;
/// let mut live = client.live_query::<(i64, String)>(
///     "SELECT id, address FROM machines WHERE healthy = 1",
///     SubscribeOptions::default(),
/// );
/// while let Some(update) = live.next().await {
///     let update = update?;
///     if update.snapshot {
///         println!("{} rows", live.rows().len());
///     }
///     for rid in &update.inserted {
///         println!("new: {:?}", live.rows()[rid]);
///     }
///     for (rid, row) in &update.deleted {
///         println!("gone: {rid} {row:?}");
///     }
/// }
/// # Ok(()) }
/// ```
pub struct LiveQuery<T> {
    sub: Subscription<T>,
    state: LiveState<T>,
    done: bool,
    error: Option<crate::Error>,
}

impl<T: DeserializeOwned + Send + 'static> LiveQuery<T> {
    pub fn new(sub: Subscription<T>) -> LiveQuery<T> {
        LiveQuery {
            sub,
            state: LiveState::default(),
            done: false,
            error: None,
        }
    }

    /// Waits for the next change to the rows: a complete snapshot, or the changes that are
    /// ready (several changes arriving together are reported as one update). `None` once
    /// the subscription ended; an error ends it (see [`Subscription`]).
    pub async fn next(&mut self) -> Option<Result<LiveUpdate<T>>> {
        if self.done {
            return self.error.take().map(Err);
        }
        let mut up = LiveUpdate::new();
        let mut ready = false;
        let mut n = 0;
        loop {
            let item = if ready {
                // Fold in whatever is already available, without waiting.
                if n >= MAX_BATCH {
                    return Some(Ok(up));
                }
                match self.sub.next().now_or_never() {
                    Some(item) => item,
                    None => return Some(Ok(up)),
                }
            } else {
                self.sub.next().await
            };
            let Some(item) = item else {
                self.done = true;
                return ready.then_some(Ok(up));
            };
            match item {
                Ok(ev) => {
                    n += 1;
                    ready |= self.state.apply(ev, &mut up);
                }
                Err(e) => {
                    // Errors end a subscription; report what was applied before it first.
                    self.done = true;
                    if ready {
                        self.error = Some(e);
                        return Some(Ok(up));
                    }
                    return Some(Err(e));
                }
            }
        }
    }

    /// The current rows by row id.
    pub fn rows(&self) -> &BTreeMap<RowId, T> {
        self.state.rows()
    }

    pub fn columns(&self) -> &[String] {
        self.state.columns()
    }

    /// The change id [`Self::rows`] are at.
    pub fn change_id(&self) -> Option<ChangeId> {
        self.state.change_id()
    }

    pub fn subscription(&self) -> &Subscription<T> {
        &self.sub
    }

    pub fn into_subscription(self) -> Subscription<T> {
        self.sub
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ChangeType::*;

    fn run(
        st: &mut LiveState<&'static str>,
        evs: Vec<SubEvent<&'static str>>,
    ) -> (LiveUpdate<&'static str>, bool) {
        let mut up = LiveUpdate::new();
        let mut ready = false;
        for e in evs {
            ready |= st.apply(e, &mut up);
        }
        (up, ready)
    }

    fn snapshot(rows: &[(RowId, &'static str)], cid: ChangeId) -> Vec<SubEvent<&'static str>> {
        let mut v = vec![SubEvent::Columns(vec!["v".into()])];
        v.extend(rows.iter().map(|(r, t)| SubEvent::Row(*r, *t)));
        v.push(SubEvent::EndOfQuery {
            change_id: Some(cid),
        });
        v
    }

    #[test]
    fn snapshot_then_changes() {
        let mut st = LiveState::default();
        let (up, ready) = run(&mut st, snapshot(&[(1, "a"), (2, "b")], 0));
        assert!(ready && up.snapshot);
        assert_eq!(up.inserted, vec![1, 2]);
        assert_eq!(st.columns(), ["v"]);
        let (up, ready) = run(
            &mut st,
            vec![
                SubEvent::Change(Insert, 3, "c", 1),
                SubEvent::Change(Update, 1, "a2", 2),
                SubEvent::Change(Delete, 2, "b", 3),
            ],
        );
        assert!(ready && !up.snapshot);
        assert_eq!((up.inserted, up.updated), (vec![3], vec![1]));
        assert_eq!(up.deleted, vec![(2, "b")]);
        assert_eq!(up.change_id, Some(3));
        assert_eq!(
            st.rows().iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(),
            vec![(1, "a2"), (3, "c")]
        );
    }

    #[test]
    fn changes_within_one_update_net_out() {
        let mut st = LiveState::default();
        run(&mut st, snapshot(&[(1, "a")], 0));
        let (up, _) = run(
            &mut st,
            vec![
                SubEvent::Change(Insert, 5, "x", 1),
                SubEvent::Change(Update, 5, "y", 2),
                SubEvent::Change(Delete, 5, "y", 3),
                SubEvent::Change(Delete, 1, "a", 4),
                SubEvent::Change(Insert, 1, "a3", 5),
            ],
        );
        assert!(up.inserted.is_empty() && up.deleted.is_empty());
        assert_eq!(up.updated, vec![1]);
        assert_eq!(st.rows()[&1], "a3");
        assert!(!st.rows().contains_key(&5));
    }

    #[test]
    fn reset_keeps_old_rows_until_the_new_snapshot_completes() {
        let mut st = LiveState::default();
        run(&mut st, snapshot(&[(1, "a"), (2, "b")], 4));
        let mut up = LiveUpdate::new();
        assert!(!st.apply(SubEvent::Reset(ResetReason::NodeChanged), &mut up));
        assert!(!st.apply(SubEvent::Columns(vec!["v".into()]), &mut up));
        assert!(!st.apply(SubEvent::Row(7, "z"), &mut up));
        assert_eq!(
            st.rows().len(),
            2,
            "old rows visible during the new snapshot"
        );
        assert!(st.apply(SubEvent::EndOfQuery { change_id: Some(1) }, &mut up));
        assert!(up.snapshot);
        assert_eq!(up.reset, Some(ResetReason::NodeChanged));
        assert_eq!(up.inserted, vec![7]);
        assert_eq!(st.rows().keys().copied().collect::<Vec<_>>(), vec![7]);
        assert_eq!(st.change_id(), Some(1));
    }

    #[test]
    fn reset_without_snapshot_clears_on_next_change() {
        let mut st = LiveState::default();
        run(&mut st, vec![SubEvent::Change(Insert, 1, "a", 1)]);
        let (up, ready) = run(
            &mut st,
            vec![
                SubEvent::Reset(ResetReason::Behind),
                SubEvent::Change(Insert, 9, "n", 1),
            ],
        );
        assert!(ready && up.snapshot);
        assert_eq!(up.reset, Some(ResetReason::Behind));
        assert_eq!(st.rows().keys().copied().collect::<Vec<_>>(), vec![9]);
    }
}
