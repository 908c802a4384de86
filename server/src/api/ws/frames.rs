//! Encoding of server messages as WebSocket text frames: the NDJSON event JSON with the
//! client's `id` spliced in front, so a batch shared by thousands of sockets is serialized once.

use crate::subs::attach::{to_json, Failure};
use bytes::{BufMut, Bytes, BytesMut};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use verdigris_api_types::ws::{ErrorCode, ServerBody, ServerMessage};

/// The client's id, JSON-encoded once per subscription or request.
#[derive(Clone)]
pub struct Tag(Bytes);

impl Tag {
    pub fn new(id: &str) -> Tag {
        Tag(Bytes::from(to_json(&id)))
    }
}

/// `{"id":<tag>,` + the rest of `event` (a JSON object): the same bytes as serializing a
/// [`ServerMessage`] with that id and body.
pub fn with_tag(tag: &Tag, event: &[u8]) -> Message {
    debug_assert!(event.first() == Some(&b'{') && event.len() > 2);
    let mut out = BytesMut::with_capacity(event.len() + tag.0.len() + 6);
    out.put_slice(b"{\"id\":");
    out.put_slice(&tag.0);
    out.put_u8(b',');
    out.put_slice(&event[1..]);
    text(out.freeze())
}

/// A whole server message.
pub fn message(m: &ServerMessage) -> Message {
    text(Bytes::from(to_json(m)))
}

/// An `error` message.
pub fn error(id: Option<&str>, code: ErrorCode, msg: impl Into<String>) -> Message {
    message(&ServerMessage::error(id.map(str::to_string), code, msg))
}

/// The error a failed attach ends with.
pub fn failure(id: &str, f: &Failure) -> Message {
    let (code, last_change_id) = match f {
        Failure::Ahead { .. } => (ErrorCode::BadRequest, None),
        Failure::TooOld { .. } => (ErrorCode::TooOld, None),
        Failure::TooSlow { last_change_id } => (ErrorCode::TooSlow, *last_change_id),
        Failure::Ended { .. } => (ErrorCode::Internal, None),
    };
    message(&ServerMessage {
        last_change_id,
        ..ServerMessage::error(Some(id.to_string()), code, f.message())
    })
}

/// A subscription's `columns`, with the node's id and hash of the subscription.
pub fn columns(id: &str, columns: Vec<String>, query_id: &str, hash: &str) -> Message {
    message(&ServerMessage {
        query_id: Some(query_id.to_string()),
        hash: Some(hash.to_string()),
        ..ServerMessage::new(Some(id.to_string()), ServerBody::Columns(columns))
    })
}

fn text(b: Bytes) -> Message {
    debug_assert!(std::str::from_utf8(&b).is_ok());
    // SAFETY: every frame is JSON written by serde_json (which writes only UTF-8), or such
    // JSON with another serde_json string (the tag) and ASCII punctuation spliced in at a
    // character boundary (after the opening brace). Checked in debug builds.
    Message::Text(unsafe { Utf8Bytes::from_bytes_unchecked(b) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use verdigris_api_types::{ChangeType, QueryEvent, SqliteValue, TypedQueryEvent};

    #[test]
    fn spliced_frames_equal_serialized_server_messages() {
        let events: Vec<QueryEvent> = vec![
            TypedQueryEvent::Row(1, vec![SqliteValue::Text("a\"b".into()), SqliteValue::Null]),
            TypedQueryEvent::Change(ChangeType::Update, 2, vec![SqliteValue::Blob(vec![7])], 3),
            TypedQueryEvent::EndOfQuery {
                time: 0.25,
                change_id: Some(3),
            },
            TypedQueryEvent::Error("x".into()),
        ];
        for id in ["s1", "with \"quotes\" and é"] {
            for ev in &events {
                let spliced = with_tag(&Tag::new(id), &to_json(ev));
                let whole = message(&ServerMessage::new(Some(id.to_string()), ev.clone().into()));
                assert_eq!(spliced, whole);
                let Message::Text(t) = spliced else {
                    panic!("text frame")
                };
                let back: ServerMessage = serde_json::from_str(&t).unwrap();
                assert_eq!(back.into_event().as_ref(), Some(ev));
            }
        }
    }
}
