//! The transport-neutral subscription state machine: it follows change ids, turns node
//! events into [`SubEvent`]s, and decides after every event or failure whether to go on,
//! resume from the last change id, take a fresh snapshot (announced by [`SubEvent::Reset`]),
//! or give up.
//!
//! Pure logic, no I/O: the driver in `subscription.rs` feeds it the events of whichever
//! transport (NDJSON or WebSocket) and opens the sessions it asks for.

use crate::error::Error;
use crate::types::ws::ErrorCode;
use crate::types::{ChangeId, ChangeType, RowId, TypedQueryEvent};
use std::collections::VecDeque;

/// One event of a [`Subscription`](crate::Subscription).
///
/// A consumer rebuilds the query result by applying them in order: `Columns`, then `Row`s,
/// then `EndOfQuery` (the snapshot is complete), then `Change`s. A `Reset` means the client
/// could not continue from where it was (a missed change, a failover to another node…): the
/// consumer must forget every row it has; a fresh snapshot (`Columns`, `Row`s, `EndOfQuery`)
/// follows, unless the subscription skips rows.
#[derive(Debug, Clone, PartialEq)]
pub enum SubEvent<T> {
    Columns(Vec<String>),
    Row(RowId, T),
    /// The snapshot is complete; `change_id` is the subscription's change id at that moment.
    EndOfQuery {
        change_id: Option<ChangeId>,
    },
    /// A change to the result; `Delete` carries the row's last values.
    Change(ChangeType, RowId, T, ChangeId),
    /// Forget all rows: a fresh snapshot replaces them.
    Reset(ResetReason),
}

/// Why a subscription started over with a fresh snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// A change id was skipped.
    Gap { expected: ChangeId, got: ChangeId },
    /// The node no longer keeps the changes after the last change id received (or has a
    /// different history: `from` ahead of its last change id).
    TooOld,
    /// The subscription no longer exists on the node.
    NotFound,
    /// The client failed over to another node, whose change ids are unrelated.
    NodeChanged,
    /// The consumer did not read fast enough and events were dropped (WebSocket).
    Behind,
    /// A snapshot was cut off, or the node answered a resume with a new snapshot.
    Interrupted,
}

/// How the driver should open the next session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Subscribe with the SQL, without `from`: a fresh snapshot.
    Fresh,
    /// Continue the subscription held by `node` after change id `from`.
    Resume {
        node: usize,
        query_id: Option<String>,
        from: ChangeId,
    },
}

/// What to do after an event or failure.
#[derive(Debug)]
pub(crate) enum Step {
    Continue,
    /// Close the session and open another per [`Machine::plan`].
    Reopen,
    /// Yield the error and end the subscription.
    Fatal(Error),
}

/// What a node's error means for a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// The node dropped the listener for being slow; resume from the last change id.
    TooSlow(Option<ChangeId>),
    /// Resuming is impossible; take a fresh snapshot.
    Resnapshot(ResetReason),
    /// Worth another attempt after a delay (node fault, shutdown).
    Transient,
    /// Retrying cannot help (bad SQL, limits, authentication).
    Fatal,
}

/// Classifies an error event: by WebSocket code when there is one, else by the NDJSON text.
pub(crate) fn classify(code: Option<ErrorCode>, msg: &str, last: Option<ChangeId>) -> ErrorKind {
    match code {
        Some(ErrorCode::TooSlow) => ErrorKind::TooSlow(last.or_else(|| too_slow_id(msg))),
        Some(ErrorCode::TooOld) => ErrorKind::Resnapshot(ResetReason::TooOld),
        Some(ErrorCode::NotFound) => ErrorKind::Resnapshot(ResetReason::NotFound),
        Some(
            ErrorCode::Internal | ErrorCode::Shutdown | ErrorCode::DuplicateId | ErrorCode::Unknown,
        ) => ErrorKind::Transient,
        Some(ErrorCode::BadRequest) if no_existing(msg) => {
            ErrorKind::Resnapshot(ResetReason::NotFound)
        }
        // `from` ahead of the subscription: another history (a node whose data was reset).
        Some(ErrorCode::BadRequest) if msg.contains("is ahead of") => {
            ErrorKind::Resnapshot(ResetReason::TooOld)
        }
        Some(ErrorCode::BadRequest | ErrorCode::Limit | ErrorCode::Timeout) => ErrorKind::Fatal,
        None => {
            if msg.contains("too slow") {
                ErrorKind::TooSlow(too_slow_id(msg))
            } else if msg.contains("deleted older changes") || msg.contains("is ahead of") {
                ErrorKind::Resnapshot(ResetReason::TooOld)
            } else if no_existing(msg) || msg.contains("could not find subscription") {
                ErrorKind::Resnapshot(ResetReason::NotFound)
            } else {
                // Unknown in-stream errors: the stream is over, but a new attempt may work
                // (a bad statement would then fail with a 4xx, which is fatal).
                ErrorKind::Transient
            }
        }
    }
}

fn no_existing(msg: &str) -> bool {
    msg.contains("no existing subscription")
}

/// `N` in "subscriber too slow: disconnected after change id N; …".
fn too_slow_id(msg: &str) -> Option<ChangeId> {
    let rest = msg.split("after change id ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The state of one subscription across sessions.
#[derive(Debug)]
pub(crate) struct Machine {
    /// The last change id applied (from `eoq` or a change); `None` before the first `eoq`.
    last: Option<ChangeId>,
    query_id: Option<String>,
    hash: Option<String>,
    /// The node (index) holding `query_id` and `last`.
    node: Option<usize>,
    /// The consumer received rows or changes since the last `Reset`.
    delivered: bool,
    /// Why the next snapshot replaces everything (emitted as `Reset` before its `Columns`).
    pending_reset: Option<ResetReason>,
    skip_rows: bool,
    resnapshot_on_gap: bool,
}

impl Machine {
    pub fn new(skip_rows: bool, resnapshot_on_gap: bool) -> Machine {
        Machine {
            last: None,
            query_id: None,
            hash: None,
            node: None,
            delivered: false,
            pending_reset: None,
            skip_rows,
            resnapshot_on_gap,
        }
    }

    pub fn last_change_id(&self) -> Option<ChangeId> {
        self.last
    }
    pub fn query_id(&self) -> Option<&str> {
        self.query_id.as_deref()
    }
    pub fn hash(&self) -> Option<&str> {
        self.hash.as_deref()
    }
    pub fn node(&self) -> Option<usize> {
        self.node
    }

    pub fn plan(&self) -> Plan {
        match (self.node, self.last) {
            (Some(node), Some(from)) => Plan::Resume {
                node,
                query_id: self.query_id.clone(),
                from,
            },
            _ => Plan::Fresh,
        }
    }

    /// A session started on `node`; `resumed` if it continues after [`Self::last_change_id`].
    pub fn started<T>(&mut self, node: usize, resumed: bool, out: &mut VecDeque<SubEvent<T>>) {
        if !resumed {
            if self.last.is_some() && self.pending_reset.is_none() {
                let changed = self.node.is_some_and(|n| n != node);
                self.pending_reset = Some(if changed {
                    ResetReason::NodeChanged
                } else {
                    ResetReason::Interrupted
                });
            }
            self.last = None;
            self.query_id = None;
            self.hash = None;
            if self.skip_rows && self.delivered {
                // No snapshot will come to carry the reset: announce it now.
                out.push_back(SubEvent::Reset(
                    self.pending_reset
                        .take()
                        .unwrap_or(ResetReason::Interrupted),
                ));
                self.delivered = false;
            }
        }
        self.node = Some(node);
    }

    /// The node named the subscription (NDJSON headers, WebSocket `columns`).
    pub fn identity(&mut self, query_id: Option<String>, hash: Option<String>) {
        if query_id.is_some() {
            self.query_id = query_id;
        }
        if hash.is_some() {
            self.hash = hash;
        }
    }

    pub fn event<T>(&mut self, ev: TypedQueryEvent<T>, out: &mut VecDeque<SubEvent<T>>) -> Step {
        match ev {
            TypedQueryEvent::Columns(c) => {
                if self.delivered || self.pending_reset.is_some() {
                    let why = self
                        .pending_reset
                        .take()
                        .unwrap_or(ResetReason::Interrupted);
                    out.push_back(SubEvent::Reset(why));
                }
                // A snapshot: its eoq sets the position.
                self.last = None;
                self.delivered = true;
                out.push_back(SubEvent::Columns(c));
            }
            TypedQueryEvent::Row(rid, row) => {
                self.delivered = true;
                out.push_back(SubEvent::Row(rid, row));
            }
            TypedQueryEvent::EndOfQuery { change_id, .. } => {
                self.last = change_id;
                self.delivered = true;
                out.push_back(SubEvent::EndOfQuery { change_id });
            }
            TypedQueryEvent::Change(kind, rid, row, cid) => match self.last {
                Some(l) if cid <= l => {
                    tracing::debug!(
                        change_id = cid,
                        last = l,
                        "skipping a change already applied"
                    );
                }
                Some(l) if cid != l + 1 => {
                    tracing::warn!(expected = l + 1, got = cid, "subscription missed changes");
                    return self.gap(
                        l + 1,
                        Some(cid),
                        ResetReason::Gap {
                            expected: l + 1,
                            got: cid,
                        },
                    );
                }
                _ => {
                    if let Some(why) = self.pending_reset.take() {
                        // skip_rows after a fresh subscribe: changes of a new history.
                        if self.delivered {
                            out.push_back(SubEvent::Reset(why));
                        }
                    }
                    self.last = Some(cid);
                    self.delivered = true;
                    out.push_back(SubEvent::Change(kind, rid, row, cid));
                }
            },
            TypedQueryEvent::Error(msg) => return self.error(None, &msg, None),
        }
        Step::Continue
    }

    /// An error from the node: the session is over either way.
    pub fn error(&mut self, code: Option<ErrorCode>, msg: &str, last: Option<ChangeId>) -> Step {
        match classify(code, msg, last) {
            ErrorKind::TooSlow(at) => {
                if let (Some(at), Some(mine)) = (at, self.last) {
                    if at != mine {
                        tracing::warn!(node_says = at, received = mine, "slow-subscriber error names another change id; resuming from the last one received");
                    }
                }
                tracing::info!(last = ?self.last, "node dropped the subscription for reading slowly; resuming");
                Step::Reopen
            }
            ErrorKind::Resnapshot(why) => {
                tracing::info!(reason = ?why, message = msg, "cannot resume the subscription; taking a fresh snapshot");
                let expected = self.last.map_or(1, |l| l + 1);
                self.gap(expected, None, why)
            }
            ErrorKind::Transient => {
                tracing::warn!(code = ?code, message = msg, "subscription interrupted by the node; retrying");
                Step::Reopen
            }
            ErrorKind::Fatal => Step::Fatal(Error::Server {
                code,
                message: msg.to_string(),
            }),
        }
    }

    /// The consumer fell behind and events were dropped.
    pub fn behind(&mut self) -> Step {
        let expected = self.last.map_or(1, |l| l + 1);
        self.gap(expected, None, ResetReason::Behind)
    }

    /// The node cannot continue from `last` (`Reopen` for a fresh subscription, unless
    /// gaps are errors).
    fn gap(&mut self, expected: ChangeId, got: Option<ChangeId>, why: ResetReason) -> Step {
        if !self.resnapshot_on_gap && self.delivered {
            return Step::Fatal(Error::MissedChange { expected, got });
        }
        self.resnapshot(why);
        Step::Reopen
    }

    /// Forget the position: the next session is a fresh subscription.
    pub fn resnapshot(&mut self, why: ResetReason) {
        self.last = None;
        self.query_id = None;
        self.hash = None;
        self.pending_reset.get_or_insert(why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ChangeType::*;

    type Ev = TypedQueryEvent<i64>;

    fn feed(m: &mut Machine, evs: Vec<Ev>) -> (Vec<SubEvent<i64>>, Vec<Step>) {
        let mut out = VecDeque::<SubEvent<i64>>::new();
        let steps = evs.into_iter().map(|e| m.event(e, &mut out)).collect();
        (out.into(), steps)
    }

    fn snapshot(change_id: u64) -> Vec<Ev> {
        vec![
            Ev::Columns(vec!["x".into()]),
            Ev::Row(1, 10),
            Ev::EndOfQuery {
                time: 0.0,
                change_id: Some(change_id),
            },
        ]
    }

    #[test]
    fn follows_contiguous_changes_and_plans_resume() {
        let mut m = Machine::new(false, true);
        assert_eq!(m.plan(), Plan::Fresh);
        let mut out = VecDeque::<SubEvent<i64>>::new();
        m.started(0, false, &mut out);
        m.identity(Some("q".into()), Some("h".into()));
        let (evs, _) = feed(&mut m, snapshot(3));
        assert_eq!(evs.len(), 3);
        let (evs, steps) = feed(
            &mut m,
            vec![Ev::Change(Insert, 2, 20, 4), Ev::Change(Update, 2, 21, 5)],
        );
        assert!(steps.iter().all(|s| matches!(s, Step::Continue)));
        assert_eq!(evs[1], SubEvent::Change(Update, 2, 21, 5));
        assert_eq!(m.last_change_id(), Some(5));
        assert_eq!(
            m.plan(),
            Plan::Resume {
                node: 0,
                query_id: Some("q".into()),
                from: 5
            }
        );
        // A resumed session: changes continue, no reset.
        m.started(0, true, &mut out);
        let (evs, _) = feed(&mut m, vec![Ev::Change(Delete, 2, 21, 6)]);
        assert_eq!(evs, vec![SubEvent::Change(Delete, 2, 21, 6)]);
        assert!(out.is_empty());
    }

    #[test]
    fn duplicates_are_skipped_and_gaps_resnapshot() {
        let mut m = Machine::new(false, true);
        feed(&mut m, snapshot(0));
        let (evs, _) = feed(
            &mut m,
            vec![Ev::Change(Insert, 2, 1, 1), Ev::Change(Insert, 2, 1, 1)],
        );
        assert_eq!(evs.len(), 1);
        let (evs, steps) = feed(&mut m, vec![Ev::Change(Insert, 3, 1, 3)]);
        assert!(evs.is_empty(), "the change after a gap is not delivered");
        assert!(matches!(steps[0], Step::Reopen));
        assert_eq!(m.plan(), Plan::Fresh);
        // The fresh snapshot starts with a Reset naming the gap.
        let mut out = VecDeque::<SubEvent<i64>>::new();
        m.started(0, false, &mut out);
        let (evs, _) = feed(&mut m, snapshot(9));
        assert_eq!(
            evs[0],
            SubEvent::Reset(ResetReason::Gap {
                expected: 2,
                got: 3
            })
        );
        assert_eq!(evs[1], SubEvent::Columns(vec!["x".into()]));
        assert_eq!(m.last_change_id(), Some(9));
    }

    #[test]
    fn gaps_are_errors_when_asked() {
        let mut m = Machine::new(false, false);
        feed(&mut m, snapshot(4));
        let (_, steps) = feed(&mut m, vec![Ev::Change(Insert, 3, 1, 6)]);
        assert!(matches!(
            &steps[0],
            Step::Fatal(Error::MissedChange {
                expected: 5,
                got: Some(6)
            })
        ));
        let mut m = Machine::new(false, false);
        feed(&mut m, snapshot(4));
        assert!(matches!(
            m.error(Some(ErrorCode::TooOld), "old", None),
            Step::Fatal(Error::MissedChange {
                expected: 5,
                got: None
            })
        ));
    }

    #[test]
    fn failover_to_another_node_resets_at_the_next_snapshot() {
        let mut m = Machine::new(false, true);
        let mut out = VecDeque::<SubEvent<i64>>::new();
        m.started(0, false, &mut out);
        feed(&mut m, snapshot(7));
        assert!(matches!(
            m.plan(),
            Plan::Resume {
                node: 0,
                from: 7,
                ..
            }
        ));
        // The driver could not resume on node 0 and subscribed afresh on node 1.
        m.started(1, false, &mut out);
        assert!(
            out.is_empty(),
            "the old rows stay until the new snapshot arrives"
        );
        assert_eq!(m.last_change_id(), None);
        let (evs, _) = feed(&mut m, snapshot(2));
        assert_eq!(evs[0], SubEvent::Reset(ResetReason::NodeChanged));
        assert!(matches!(
            m.plan(),
            Plan::Resume {
                node: 1,
                from: 2,
                ..
            }
        ));
    }

    #[test]
    fn interrupted_snapshot_resets_before_the_next() {
        let mut m = Machine::new(false, true);
        let mut out = VecDeque::<SubEvent<i64>>::new();
        m.started(0, false, &mut out);
        feed(&mut m, vec![Ev::Columns(vec![]), Ev::Row(1, 1)]);
        // Cut off before eoq: no position, so a fresh subscription.
        assert_eq!(m.plan(), Plan::Fresh);
        m.started(0, false, &mut out);
        let (evs, _) = feed(&mut m, snapshot(1));
        assert_eq!(evs[0], SubEvent::Reset(ResetReason::Interrupted));
    }

    #[test]
    fn resume_answered_with_a_snapshot_resets() {
        // `from=0` is answered with a snapshot.
        let mut m = Machine::new(false, true);
        feed(&mut m, snapshot(0));
        let mut out = VecDeque::<SubEvent<i64>>::new();
        m.started(0, true, &mut out);
        let (evs, _) = feed(&mut m, snapshot(0));
        assert_eq!(evs[0], SubEvent::Reset(ResetReason::Interrupted));
        assert_eq!(evs.len(), 4);
    }

    #[test]
    fn error_classification() {
        use ErrorKind::*;
        let nd = |m: &str| classify(None, m, None);
        assert_eq!(
            nd("subscriber too slow: disconnected after change id 42; resume with GET /v1/subscriptions/x?from=42"),
            TooSlow(Some(42))
        );
        assert_eq!(
            nd("subscription already deleted older changes (min change id: 9); you asked for changes after 3: resubscribe without `from` to get a fresh snapshot"),
            Resnapshot(ResetReason::TooOld)
        );
        assert_eq!(
            nd("from=9 is ahead of this subscription's last change id 2"),
            Resnapshot(ResetReason::TooOld)
        );
        assert_eq!(
            nd("a `from` query param was supplied, but no existing subscription found; subscribe without `from`"),
            Resnapshot(ResetReason::NotFound)
        );
        assert_eq!(
            nd("could not find subscription with id x"),
            Resnapshot(ResetReason::NotFound)
        );
        assert_eq!(nd("something else"), Transient);
        let ws = |c, l| classify(Some(c), "m", l);
        assert_eq!(ws(ErrorCode::TooSlow, Some(5)), TooSlow(Some(5)));
        assert_eq!(ws(ErrorCode::TooOld, None), Resnapshot(ResetReason::TooOld));
        assert_eq!(
            ws(ErrorCode::NotFound, None),
            Resnapshot(ResetReason::NotFound)
        );
        assert_eq!(ws(ErrorCode::BadRequest, None), Fatal);
        assert_eq!(
            classify(
                Some(ErrorCode::BadRequest),
                "from=9 is ahead of this subscription's last change id 2",
                None
            ),
            Resnapshot(ResetReason::TooOld)
        );
        assert_eq!(ws(ErrorCode::Limit, None), Fatal);
        assert_eq!(ws(ErrorCode::Shutdown, None), Transient);
        assert_eq!(ws(ErrorCode::Internal, None), Transient);
    }

    #[test]
    fn errors_drive_the_plan() {
        let mut m = Machine::new(false, true);
        let mut out = VecDeque::<SubEvent<i64>>::new();
        m.started(2, false, &mut out);
        m.identity(Some("q".into()), None);
        feed(&mut m, snapshot(5));
        // Too slow: resume where we are.
        assert!(matches!(
            m.error(Some(ErrorCode::TooSlow), "slow", Some(5)),
            Step::Reopen
        ));
        assert_eq!(
            m.plan(),
            Plan::Resume {
                node: 2,
                query_id: Some("q".into()),
                from: 5
            }
        );
        // In-stream NDJSON "too old": fresh snapshot.
        let (_, steps) = feed(
            &mut m,
            vec![Ev::Error(
                "subscription already deleted older changes (min change id: 9)".into(),
            )],
        );
        assert!(matches!(steps[0], Step::Reopen));
        assert_eq!(m.plan(), Plan::Fresh);
        // Bad SQL is fatal.
        assert!(matches!(
            m.error(Some(ErrorCode::BadRequest), "no such table: x", None),
            Step::Fatal(Error::Server { .. })
        ));
        // Behind: fresh snapshot with a Behind reset.
        let mut m = Machine::new(false, true);
        feed(&mut m, snapshot(1));
        assert!(matches!(m.behind(), Step::Reopen));
        m.started(0, false, &mut out);
        let (evs, _) = feed(&mut m, snapshot(1));
        assert_eq!(evs[0], SubEvent::Reset(ResetReason::Behind));
    }

    #[test]
    fn skip_rows_resets_when_the_history_changes() {
        let mut m = Machine::new(true, true);
        let mut out = VecDeque::<SubEvent<i64>>::new();
        m.started(0, false, &mut out);
        // No snapshot: the first change sets the position, whatever its id.
        let (evs, _) = feed(&mut m, vec![Ev::Change(Insert, 1, 1, 7)]);
        assert_eq!(evs.len(), 1);
        assert!(matches!(m.plan(), Plan::Resume { from: 7, .. }));
        // Failover: the consumer is told at once (no snapshot will follow).
        m.started(1, false, &mut out);
        assert_eq!(
            out.pop_front(),
            Some(SubEvent::Reset(ResetReason::NodeChanged))
        );
        let (evs, _) = feed(&mut m, vec![Ev::Change(Insert, 1, 1, 3)]);
        assert_eq!(evs, vec![SubEvent::Change(Insert, 1, 1, 3)]);
    }
}
