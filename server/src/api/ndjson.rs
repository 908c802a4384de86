//! NDJSON encoding of typed events (one JSON object per line) for the HTTP streams:
//! `/v1/queries`, `/v1/subscriptions` and `/v1/updates`.

use super::Body;
use crate::subs::attach::{to_json, Failure, Item};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Response;
use serde::Serialize;
use std::convert::Infallible;
use std::task::Poll;
use verdigris_api_types::TypedQueryEvent;

/// Bytes gathered into one body frame when more events are ready.
const CHUNK_BYTES: usize = 16 * 1024;

/// Appends `v` as one NDJSON line.
pub fn push_line<T: Serialize>(out: &mut BytesMut, v: &T) {
    out.extend_from_slice(&to_json(v));
    out.extend_from_slice(b"\n");
}

/// `{"error": msg}` as one NDJSON line.
pub fn error_line(msg: String) -> Bytes {
    let mut out = BytesMut::new();
    push_line(&mut out, &TypedQueryEvent::<()>::Error(msg));
    out.freeze()
}

/// A 200 `application/x-ndjson` response streaming `chunks`.
pub fn response(chunks: impl Stream<Item = Bytes> + Send + Sync + 'static) -> Response<Body> {
    let frames = chunks.map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

/// Encodes a listener's items as NDJSON chunks: whatever is ready, up to `CHUNK_BYTES` per
/// chunk (a snapshot goes out in large frames, a live change at once). Nothing is buffered
/// per stream between chunks, so an idle stream costs only its state.
pub fn encode_items<E: Serialize + Send + Sync + 'static>(
    items: impl Stream<Item = Item<E>> + Send + 'static,
    failure_text: impl Fn(&Failure) -> String + Send + Sync + 'static,
) -> impl Stream<Item = Bytes> + Send + 'static {
    let mut items = Box::pin(items);
    let mut done = false;
    futures_util::stream::poll_fn(move |cx| {
        if done {
            return Poll::Ready(None);
        }
        let mut out = BytesMut::new();
        while out.len() < CHUNK_BYTES {
            match items.as_mut().poll_next(cx) {
                Poll::Ready(Some(item)) => match item {
                    Item::Event(ev) => push_line(&mut out, &ev),
                    Item::Batch(b) => {
                        for line in b.json() {
                            out.extend_from_slice(line);
                            out.extend_from_slice(b"\n");
                        }
                    }
                    Item::Failed(f) => out.extend_from_slice(&error_line(failure_text(&f))),
                },
                Poll::Ready(None) => {
                    done = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        match (out.is_empty(), done) {
            (false, _) => Poll::Ready(Some(out.freeze())),
            (true, true) => Poll::Ready(None),
            (true, false) => Poll::Pending,
        }
    })
}
