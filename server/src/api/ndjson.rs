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
use verdigris_api_types::TypedQueryEvent;

/// Initial events sent per body frame (a snapshot goes out in chunks, not line by line).
const INITIAL_CHUNK: usize = 256;

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

/// Encodes a listener's items as NDJSON chunks. `failure_text` words a failure for this
/// endpoint (e.g. how to resume).
pub fn encode_items<E: Serialize + Send + Sync + 'static>(
    items: impl Stream<Item = Item<E>> + Send + 'static,
    failure_text: impl Fn(&Failure) -> String + Send + Sync + 'static,
) -> impl Stream<Item = Bytes> + Send + 'static {
    items.ready_chunks(INITIAL_CHUNK).map(move |chunk| {
        let mut out = BytesMut::new();
        for item in chunk {
            match item {
                Item::Event(ev) => push_line(&mut out, &ev),
                Item::Batch(b) => {
                    for line in b.json() {
                        out.extend_from_slice(line);
                        out.extend_from_slice(b"\n");
                    }
                }
                Item::Failed(f) => out.extend_from_slice(&error_line(failure_text(&f))),
            }
        }
        out.freeze()
    })
}
