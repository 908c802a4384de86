//! The attach contract, in one place for every transport: what a listener receives after it
//! attaches to a subscription (or an `/v1/updates` handle), as typed [`Item`]s.
//!
//! 1. The initial events — a snapshot (`columns`, `row`…, `eoq`) or a replay of the change log
//!    after `from` — or a [`Failure`] if the attach cannot be served (`from` too old or ahead).
//! 2. Every published batch whose last change id is newer than the attach point, in order, so
//!    change ids stay contiguous across the hand-over from replay to live.
//! 3. If the listener fell too far behind and was dropped, a final [`Failure::TooSlow`] naming
//!    the last change id it was sent, so the client can resume from there.
//!
//! Encoding (NDJSON lines, WebSocket frames) is the transport's job.

use bytes::Bytes;
use futures_util::Stream;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use verdigris_api_types::QueryEvent;

/// Batches queued per listener before it is considered too slow.
pub const LISTENER_QUEUE: usize = 1024;

/// The events of one matcher round for one subscription (or updates handle), shared by all
/// its listeners. Each event's JSON is computed once, by the first transport that asks.
#[derive(Debug)]
pub struct Published<E> {
    /// Highest change id in `events` (0 for `/v1/updates` notifications, which have none).
    pub last_id: u64,
    pub events: Vec<E>,
    json: OnceLock<Vec<Bytes>>,
}

impl<E> Published<E> {
    pub fn new(last_id: u64, events: Vec<E>) -> Arc<Self> {
        Arc::new(Published {
            last_id,
            events,
            json: OnceLock::new(),
        })
    }
}

impl<E: Serialize> Published<E> {
    /// Each event as one JSON object (no trailing newline).
    pub fn json(&self) -> &[Bytes] {
        self.json.get_or_init(|| {
            self.events
                .iter()
                .map(|e| Bytes::from(to_json(e)))
                .collect()
        })
    }
}

/// JSON of a wire value. Our event types only have string map keys and serialize
/// non-finite reals as null, so serialization cannot fail.
pub fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("wire types always serialize to JSON")
}

/// What a listener's two sides share: its queue of batches, bounded by [`LISTENER_QUEUE`],
/// and how it ended. One small allocation per listener; the queue allocates only while
/// batches wait (a tokio channel took about 800 bytes per listener up front, which counted
/// for every idle subscriber).
struct Shared<E> {
    state: Mutex<QueueState<E>>,
}

struct QueueState<E> {
    batches: VecDeque<Arc<Published<E>>>,
    /// The receiving side waiting for a batch.
    waker: Option<Waker>,
    /// The manager dropped the [`Listener`]: no more batches will come.
    sender_gone: bool,
    /// The transport dropped the [`Attach`] or its stream: nobody reads.
    receiver_gone: bool,
    /// Dropped for being too slow.
    lagged: bool,
    /// Ended by the node, with why.
    ended: Option<String>,
}

/// Queue capacity kept once a listener has caught up (more is released).
const KEPT_CAPACITY: usize = 8;

impl<E> Shared<E> {
    fn new() -> Arc<Self> {
        Arc::new(Shared {
            state: Mutex::new(QueueState {
                batches: VecDeque::new(),
                waker: None,
                sender_gone: false,
                receiver_gone: false,
                lagged: false,
                ended: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState<E>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next batch; `None` once the sending side is gone and the queue is empty.
    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Arc<Published<E>>>> {
        let mut st = self.lock();
        if let Some(b) = st.batches.pop_front() {
            if st.batches.is_empty() && st.batches.capacity() > KEPT_CAPACITY {
                st.batches.shrink_to(KEPT_CAPACITY);
            }
            return Poll::Ready(Some(b));
        }
        if st.sender_gone {
            return Poll::Ready(None);
        }
        if !st.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            st.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Sets the sending side's end state and wakes the receiver.
    fn close_sender(&self, f: impl FnOnce(&mut QueueState<E>)) {
        let mut st = self.lock();
        f(&mut st);
        st.sender_gone = true;
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The receiving side: dropping it tells the manager nobody reads any more.
struct Receiver<E>(Arc<Shared<E>>);

impl<E> Drop for Receiver<E> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.receiver_gone = true;
        let batches = std::mem::take(&mut st.batches);
        drop(st);
        drop(batches);
    }
}

/// Why a batch could not be queued.
enum SendError {
    /// The listener has [`LISTENER_QUEUE`] batches waiting.
    Full,
    /// Nobody reads the listener any more.
    Closed,
}

/// The sending side of a listener, kept by the manager. Dropping it ends the listener's
/// stream after the batches already queued.
pub(super) struct Listener<E> {
    shared: Arc<Shared<E>>,
}

impl<E> Listener<E> {
    pub(super) fn is_closed(&self) -> bool {
        self.shared.lock().receiver_gone
    }

    fn try_send(&self, batch: Arc<Published<E>>) -> Result<(), SendError> {
        let mut st = self.shared.lock();
        if st.receiver_gone {
            return Err(SendError::Closed);
        }
        if st.batches.len() >= LISTENER_QUEUE {
            return Err(SendError::Full);
        }
        st.batches.push_back(batch);
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Ends this listener: after the batches already queued it receives
    /// [`Failure::Ended`] with `reason`.
    pub(super) fn end(self, reason: &str) {
        let reason = reason.to_string();
        self.shared.close_sender(|st| st.ended = Some(reason));
    }

    /// Flags this listener as too slow: once dropped, after the batches already queued, it
    /// receives [`Failure::TooSlow`].
    fn mark_lagged(&self) {
        self.shared.lock().lagged = true;
    }
}

impl<E> Drop for Listener<E> {
    fn drop(&mut self) {
        self.shared.close_sender(|_| {});
    }
}

/// Why an attach ended (or could not start) with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `from` is ahead of the subscription's last change id.
    Ahead { from: u64, last: u64 },
    /// The change log no longer holds the changes right after `from`.
    TooOld { from: u64, min: u64 },
    /// The listener fell too far behind and was dropped. `last_change_id` is the last change
    /// id it was sent (`None` for `/v1/updates`, whose notifications have no ids).
    TooSlow { last_change_id: Option<u64> },
    /// The node ended the subscription (it could not keep it exact, e.g. its on-disk state
    /// became unreadable); subscribing again starts a fresh one.
    Ended { reason: String },
}

impl Failure {
    /// A transport-neutral description.
    pub fn message(&self) -> String {
        match self {
            Failure::Ahead { from, last } => {
                format!("from={from} is ahead of this subscription's last change id {last}")
            }
            Failure::TooOld { from, min } => format!(
                "subscription already deleted older changes (min change id: {min}); you asked for changes after {from}: resubscribe without `from` to get a fresh snapshot"
            ),
            Failure::TooSlow { last_change_id: Some(last) } => format!(
                "subscriber too slow: disconnected after change id {last}; resume from change id {last}"
            ),
            Failure::TooSlow { last_change_id: None } => {
                "listener too slow: it fell too far behind and was disconnected; re-open the stream".into()
            }
            Failure::Ended { reason } => {
                format!("subscription ended by the node: {reason}; subscribe again")
            }
        }
    }
}

/// What a listener receives, in order.
#[derive(Debug)]
pub enum Item<E> {
    /// An initial event (snapshot or replay).
    Event(E),
    /// A live batch, shared with the subscription's other listeners.
    Batch(Arc<Published<E>>),
    /// The last item: the attach failed or the listener was dropped.
    Failed(Failure),
}

/// An attached listener, before it is turned into a stream of [`Item`]s.
pub struct Attach<E = QueryEvent> {
    /// The subscription's (or updates handle's) id: `corro-query-id`.
    pub id: String,
    /// The hash of the subscription's SQL: `corro-query-hash` (empty for updates).
    pub hash: String,
    initial: Vec<E>,
    failure: Option<Failure>,
    rx: Option<Receiver<E>>,
    start: u64,
}

impl<E> Attach<E> {
    /// A new listener that first receives `initial`, then every batch newer than `start`.
    pub(super) fn listen(
        id: String,
        hash: String,
        initial: Vec<E>,
        start: u64,
    ) -> (Attach<E>, Listener<E>) {
        let shared = Shared::new();
        let attach = Attach {
            id,
            hash,
            initial,
            failure: None,
            rx: Some(Receiver(shared.clone())),
            start,
        };
        (attach, Listener { shared })
    }

    /// An attach that only reports `failure`.
    pub(super) fn failed(id: String, hash: String, failure: Failure) -> Attach<E> {
        Attach {
            id,
            hash,
            initial: Vec::new(),
            failure: Some(failure),
            rx: None,
            start: 0,
        }
    }

    /// The items this listener receives; ends after a failure or when the subscription ends.
    pub fn into_stream(self) -> Items<E> {
        Items {
            counts_ids: !self.hash.is_empty(),
            initial: self.initial.into_iter(),
            failure: self.failure,
            rx: self.rx,
            last: self.start,
        }
    }
}

/// The stream of an attached listener's [`Item`]s (see [`Attach::into_stream`]). A plain
/// state machine rather than a combinator over a future, so an idle listener keeps only this.
pub struct Items<E> {
    initial: std::vec::IntoIter<E>,
    failure: Option<Failure>,
    rx: Option<Receiver<E>>,
    /// The last change id passed on.
    last: u64,
    /// Whether batches carry change ids (subscriptions do, `/v1/updates` do not).
    counts_ids: bool,
}

// Never pinned structurally: the events are only moved out.
impl<E> Unpin for Items<E> {}

impl<E> Stream for Items<E> {
    type Item = Item<E>;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<E>>> {
        let st = self.get_mut();
        if let Some(ev) = st.initial.next() {
            return Poll::Ready(Some(Item::Event(ev)));
        }
        if st.initial.as_slice().is_empty() {
            // All sent: release the snapshot's buffer for the rest of the listener's life.
            st.initial = Vec::new().into_iter();
        }
        if let Some(f) = st.failure.take() {
            st.rx = None;
            return Poll::Ready(Some(Item::Failed(f)));
        }
        let Some(rx) = &st.rx else {
            return Poll::Ready(None);
        };
        loop {
            match rx.0.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                // Already sent as part of the replay.
                Poll::Ready(Some(b)) if b.last_id != 0 && b.last_id <= st.last => continue,
                Poll::Ready(Some(b)) => {
                    st.last = st.last.max(b.last_id);
                    return Poll::Ready(Some(Item::Batch(b)));
                }
                Poll::Ready(None) => {
                    let (ended, lagged) = {
                        let mut q = rx.0.lock();
                        (q.ended.take(), q.lagged)
                    };
                    st.rx = None;
                    if let Some(reason) = ended {
                        return Poll::Ready(Some(Item::Failed(Failure::Ended { reason })));
                    }
                    if lagged {
                        let last_change_id = st.counts_ids.then_some(st.last);
                        return Poll::Ready(Some(Item::Failed(Failure::TooSlow {
                            last_change_id,
                        })));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}

/// Sends a batch to every listener; a listener whose queue is full is dropped and flagged.
/// Returns how many listeners were dropped for being too slow.
pub(super) fn publish<E>(listeners: &mut Vec<Listener<E>>, batch: Arc<Published<E>>) -> u64 {
    let mut slow = 0;
    listeners.retain(|l| match l.try_send(batch.clone()) {
        Ok(()) => true,
        Err(SendError::Full) => {
            l.mark_lagged();
            slow += 1;
            false
        }
        Err(SendError::Closed) => false,
    });
    slow
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use verdigris_api_types::{ChangeType, TypedQueryEvent};

    fn change(id: u64) -> QueryEvent {
        TypedQueryEvent::Change(ChangeType::Insert, id, vec![], id)
    }

    fn ids(items: &[Item<QueryEvent>]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                Item::Event(TypedQueryEvent::Change(_, _, _, c)) => format!("e{c}"),
                Item::Event(_) => "e".into(),
                Item::Batch(b) => format!("b{}", b.last_id),
                Item::Failed(f) => format!("{f:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn replay_then_live_skips_what_the_replay_sent() {
        let (a, l) = Attach::listen("x".into(), "h".into(), vec![change(3), change(4)], 4);
        let mut ls = vec![l];
        // Published while the replay was being read: already covered by it.
        publish(&mut ls, Published::new(4, vec![change(4)]));
        publish(&mut ls, Published::new(6, vec![change(5), change(6)]));
        drop(ls);
        let items: Vec<_> = a.into_stream().collect().await;
        assert_eq!(ids(&items), ["e3", "e4", "b6"]);
    }

    #[tokio::test]
    async fn a_dropped_listener_gets_too_slow_with_its_last_id() {
        let (a, l) = Attach::<QueryEvent>::listen("x".into(), "h".into(), vec![], 0);
        let mut ls = vec![l];
        for i in 1..=(LISTENER_QUEUE as u64 + 1) {
            publish(&mut ls, Published::new(i, vec![change(i)]));
        }
        assert!(ls.is_empty(), "the full listener was dropped");
        let items: Vec<_> = a.into_stream().collect().await;
        assert_eq!(items.len(), LISTENER_QUEUE + 1);
        assert!(matches!(
            items.last(),
            Some(Item::Failed(Failure::TooSlow { last_change_id: Some(l) })) if *l == LISTENER_QUEUE as u64
        ));
    }

    #[tokio::test]
    async fn a_failed_attach_reports_only_its_failure() {
        let a = Attach::<QueryEvent>::failed(
            "x".into(),
            "h".into(),
            Failure::Ahead { from: 9, last: 2 },
        );
        let items: Vec<_> = a.into_stream().collect().await;
        assert_eq!(ids(&items), ["Ahead { from: 9, last: 2 }"]);
    }

    #[tokio::test]
    async fn an_ended_listener_gets_its_queued_batches_then_the_reason() {
        let (a, l) = Attach::<QueryEvent>::listen("x".into(), "h".into(), vec![], 0);
        let mut ls = vec![l];
        publish(&mut ls, Published::new(1, vec![change(1)]));
        ls.pop().expect("listener").end("disk gone");
        let items: Vec<_> = a.into_stream().collect().await;
        assert_eq!(ids(&items), ["b1", "Ended { reason: \"disk gone\" }"]);
    }

    struct CountWakes(std::sync::atomic::AtomicUsize);

    impl futures_util::task::ArcWake for CountWakes {
        fn wake_by_ref(me: &Arc<Self>) {
            me.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_waiting_listener_is_woken_by_a_batch_and_by_its_end() {
        let (a, l) = Attach::<QueryEvent>::listen("x".into(), "h".into(), vec![], 0);
        let wakes = Arc::new(CountWakes(Default::default()));
        let waker = futures_util::task::waker(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut stream = Box::pin(a.into_stream());
        let woken = || wakes.0.load(std::sync::atomic::Ordering::SeqCst);
        assert!(stream.as_mut().poll_next(&mut cx).is_pending());
        let mut ls = vec![l];
        // Published from another thread, as the workers do.
        std::thread::scope(|s| {
            s.spawn(|| publish(&mut ls, Published::new(1, vec![change(1)])));
        });
        assert_eq!(woken(), 1);
        match stream.as_mut().poll_next(&mut cx) {
            Poll::Ready(Some(Item::Batch(b))) => assert_eq!(b.last_id, 1),
            other => panic!("expected the batch, got {other:?}"),
        }
        assert!(stream.as_mut().poll_next(&mut cx).is_pending());
        drop(ls);
        assert_eq!(woken(), 2);
        assert!(matches!(
            stream.as_mut().poll_next(&mut cx),
            Poll::Ready(None)
        ));
    }

    #[tokio::test]
    async fn a_listener_nobody_reads_is_closed_and_dropped_on_the_next_batch() {
        let (a, l) = Attach::<QueryEvent>::listen("x".into(), "h".into(), vec![], 0);
        let mut ls = vec![l];
        publish(&mut ls, Published::new(1, vec![change(1)]));
        assert!(!ls[0].is_closed());
        drop(a);
        assert!(ls[0].is_closed());
        assert_eq!(publish(&mut ls, Published::new(2, vec![change(2)])), 0);
        assert!(ls.is_empty(), "removed, not counted as too slow");
    }

    #[test]
    fn a_listener_queue_releases_its_memory_once_drained() {
        let (a, l) = Attach::<QueryEvent>::listen("x".into(), "h".into(), vec![], 0);
        let mut ls = vec![l];
        for i in 1..=100 {
            publish(&mut ls, Published::new(i, vec![change(i)]));
        }
        let shared = a.rx.as_ref().unwrap().0.clone();
        assert!(shared.lock().batches.capacity() >= 100);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..100 {
            assert!(matches!(shared.poll_recv(&mut cx), Poll::Ready(Some(_))));
        }
        assert!(shared.poll_recv(&mut cx).is_pending());
        assert!(shared.lock().batches.capacity() <= KEPT_CAPACITY);
    }

    #[test]
    fn json_is_computed_once_per_batch() {
        let b = Published::new(1, vec![change(1)]);
        let first = b.json().as_ptr();
        assert_eq!(b.json().as_ptr(), first);
        assert_eq!(&b.json()[0][..], br#"{"change":["insert",1,[],1]}"#);
    }
}
