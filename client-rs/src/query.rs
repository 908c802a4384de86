//! [`QueryStream`]: the events of one query, read as they arrive over HTTP (NDJSON) or the
//! WebSocket.

use crate::error::{Error, Result};
use crate::http::Lines;
use crate::types::ws::ServerBody;
use crate::types::{SqliteValue, TypedQueryEvent};
use crate::ws::{EndReason, Feed, Item, WsHandle};
use futures_util::stream::{self, BoxStream};
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The events of a query: `Columns`, `Row`s, then `EndOfQuery`, after which the stream
/// ends. An `error` event from the node is yielded as `Err(`[`Error::Server`]`)` and ends
/// the stream (so [`TypedQueryEvent::Error`] never appears); a stream cut off before its
/// `EndOfQuery` ends with an error too.
pub struct QueryStream<T = Vec<SqliteValue>> {
    inner: BoxStream<'static, Result<TypedQueryEvent<T>>>,
}

impl<T> Stream for QueryStream<T> {
    type Item = Result<TypedQueryEvent<T>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl<T> std::fmt::Debug for QueryStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryStream").finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned + Send + 'static> QueryStream<T> {
    /// Reads the whole result: the column names and every row.
    pub async fn collect_rows(mut self) -> Result<(Vec<String>, Vec<T>)> {
        let mut columns = Vec::new();
        let mut rows = Vec::new();
        while let Some(ev) = self.next().await {
            match ev? {
                TypedQueryEvent::Columns(c) => columns = c,
                TypedQueryEvent::Row(_, r) => rows.push(r),
                TypedQueryEvent::EndOfQuery { .. } => return Ok((columns, rows)),
                TypedQueryEvent::Change(..) | TypedQueryEvent::Error(_) => {}
            }
        }
        Err(Error::ConnectionLost {
            reason: Some("the query's stream ended before its end-of-query event".into()),
        })
    }

    /// Decodes an NDJSON body.
    pub(crate) fn ndjson(lines: Lines) -> QueryStream<T> {
        let inner = stream::unfold(Some(lines), |lines| async move {
            let mut lines = lines?;
            let item = match lines.next_line().await {
                Ok(Some(line)) => match serde_json::from_slice::<TypedQueryEvent<T>>(&line) {
                    Ok(TypedQueryEvent::Error(message)) => Err(Error::Server {
                        code: None,
                        message,
                    }),
                    Ok(ev) => Ok(ev),
                    Err(e) => Err(decode_error(&line, e)),
                },
                Ok(None) => Err(Error::ConnectionLost {
                    reason: Some(format!(
                        "{} ended the query's stream before its end-of-query event",
                        lines.addr()
                    )),
                }),
                Err(e) => Err(e),
            };
            let more =
                matches!(item, Ok(ref ev) if !matches!(ev, TypedQueryEvent::EndOfQuery { .. }));
            Some((item, more.then_some(lines)))
        });
        QueryStream {
            inner: inner.boxed(),
        }
    }

    /// Decodes a query's messages on the WebSocket; dropping the stream forgets the query.
    pub(crate) fn ws(feed: Feed, handle: WsHandle) -> QueryStream<T> {
        struct St {
            feed: Feed,
            handle: WsHandle,
        }
        impl Drop for St {
            fn drop(&mut self) {
                self.handle.cancel(self.feed.id.clone());
            }
        }
        let inner = stream::unfold(Some(St { feed, handle }), |st| async move {
            let mut st = st?;
            loop {
                let item = match st.feed.recv().await {
                    Some(Item::Started { .. }) => continue,
                    Some(Item::Msg { msg: m, .. }) => match m.body {
                        ServerBody::Columns(c) => Ok(TypedQueryEvent::Columns(c)),
                        ServerBody::Row(rid, cells) => serde_json::from_value::<T>(cells)
                            .map(|r| TypedQueryEvent::Row(rid, r))
                            .map_err(|e| {
                                Error::decode(
                                    "a query row (does the row type match the columns?)",
                                    e,
                                )
                            }),
                        ServerBody::EndOfQuery { time, change_id } => {
                            Ok(TypedQueryEvent::EndOfQuery { time, change_id })
                        }
                        ServerBody::Error(message) => Err(Error::Server {
                            code: m.code,
                            message,
                        }),
                        other => {
                            tracing::debug!(?other, "unexpected message for a query; ignored");
                            continue;
                        }
                    },
                    None => Err(match st.feed.end.take() {
                        Some(EndReason::Failed(e)) => e,
                        Some(EndReason::Behind) => Error::Lagged,
                        Some(EndReason::Disconnected | EndReason::Ended) => {
                            Error::ConnectionLost { reason: None }
                        }
                        None => Error::Closed,
                    }),
                };
                let more =
                    matches!(item, Ok(ref ev) if !matches!(ev, TypedQueryEvent::EndOfQuery { .. }));
                return Some((item, more.then_some(st)));
            }
        });
        QueryStream {
            inner: inner.boxed(),
        }
    }
}

pub(crate) fn decode_error(line: &[u8], e: serde_json::Error) -> Error {
    let head: String = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
    Error::decode(
        "an event (does the row type match the columns?)",
        format!("{e} in {head}"),
    )
}
