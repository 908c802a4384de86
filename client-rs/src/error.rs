//! The client's error type, and which errors are worth retrying on another node.

use crate::types::ws::ErrorCode;
use crate::types::ChangeId;
use std::time::Duration;

/// A boxed error from the transport layers (hyper, tungstenite, I/O).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to a node.
///
/// [`Error::is_retryable`] tells the transient failures (network, node faults, overload),
/// which the client retries and fails over by itself, from the fatal ones (bad SQL,
/// authentication, a row that does not decode into the requested type).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client was configured with something unusable (no address, a bad token…).
    #[error("invalid client configuration: {0}")]
    Config(String),

    /// No connection could be made to the node: nothing was sent.
    #[error("could not connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: BoxError,
    },

    /// The connection failed after the request was (perhaps) sent, or while reading the
    /// answer. For a transaction the outcome is unknown.
    #[error("connection to {addr} failed: {source}")]
    Transport {
        addr: String,
        #[source]
        source: BoxError,
    },

    /// No answer within the configured time. For a transaction the outcome is unknown.
    #[error("{addr} did not answer within {after:?}")]
    Timeout { addr: String, after: Duration },

    /// The node answered with an error status; `message` is its `{"error": …}` text.
    #[error("{addr} answered {status}: {message}")]
    Http {
        addr: String,
        status: u16,
        message: String,
    },

    /// An answer or event that does not decode (or a row that does not fit the requested
    /// type).
    #[error("could not decode {what}: {message}")]
    Decode { what: String, message: String },

    /// An `error` event or message from the node, after a stream started (or any error over
    /// the WebSocket). `code` is set for WebSocket errors.
    #[error("node error{}: {message}", code.map(|c| format!(" ({})", code_name(c))).unwrap_or_default())]
    Server {
        code: Option<ErrorCode>,
        message: String,
    },

    /// A subscription saw a change id that does not follow the last one (only returned when
    /// [`SubscribeOptions::resnapshot_on_gap`](crate::SubscribeOptions::resnapshot_on_gap)
    /// is off; by default the client takes a fresh snapshot instead). `got` is `None` when
    /// the node said the changes after `expected - 1` are no longer available.
    #[error("missed subscription changes: expected change id {expected}, got {}", got.map_or("none (no longer retained by the node)".to_string(), |g| g.to_string()))]
    MissedChange {
        expected: ChangeId,
        got: Option<ChangeId>,
    },

    /// A WebSocket protocol failure (handshake refused, unexpected frame…).
    #[error("websocket to {addr}: {message}")]
    WebSocket { addr: String, message: String },

    /// The consumer of a WebSocket query did not read its rows fast enough; the connection
    /// never waits for one consumer, so the query was abandoned.
    #[error("the query's results were not read fast enough and were dropped; read the stream promptly or use the HTTP query")]
    Lagged,

    /// The connection closed while this request was in flight (a WebSocket, or a query's
    /// stream cut off before its end). For a transaction the outcome is unknown.
    #[error("the connection was lost{}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    ConnectionLost { reason: Option<String> },

    /// Every attempt failed; `last` is the last failure.
    #[error("gave up after {attempts} attempts: {last}")]
    Exhausted { attempts: u32, last: Box<Error> },

    /// The client's background connection task is gone (the runtime is shutting down).
    #[error("the client's connection task has stopped")]
    Closed,
}

fn code_name(c: ErrorCode) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{c:?}"))
}

impl Error {
    /// Whether another attempt (on this node later, or on the next node) may succeed:
    /// connection failures, timeouts, 5xx answers (503: the node is at its concurrency
    /// limit), node-side `internal`/`shutdown` errors. 4xx answers (bad SQL, bad parameters,
    /// authentication) and decoding errors are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect { .. }
            | Error::Transport { .. }
            | Error::Timeout { .. }
            | Error::ConnectionLost { .. }
            | Error::WebSocket { .. } => true,
            Error::Http { status, .. } => *status >= 500,
            Error::Server { code, .. } => {
                matches!(
                    code,
                    Some(ErrorCode::Internal | ErrorCode::Shutdown | ErrorCode::Unknown)
                )
            }
            Error::Exhausted { last, .. } => last.is_retryable(),
            Error::Config(_)
            | Error::Decode { .. }
            | Error::MissedChange { .. }
            | Error::Lagged
            | Error::Closed => false,
        }
    }

    /// The HTTP status, for [`Error::Http`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Http { status, .. } => Some(*status),
            Error::Exhausted { last, .. } => last.status(),
            _ => None,
        }
    }

    /// The node's message, for errors the node reported ([`Error::Http`], [`Error::Server`]).
    pub fn server_message(&self) -> Option<&str> {
        match self {
            Error::Http { message, .. } | Error::Server { message, .. } => Some(message),
            Error::Exhausted { last, .. } => last.server_message(),
            _ => None,
        }
    }

    /// A copy for every waiter of a shared failure (sources become their text).
    pub(crate) fn clone_lossy(&self) -> Error {
        let text = |e: &BoxError| -> BoxError { e.to_string().into() };
        match self {
            Error::Config(m) => Error::Config(m.clone()),
            Error::Connect { addr, source } => Error::Connect {
                addr: addr.clone(),
                source: text(source),
            },
            Error::Transport { addr, source } => Error::Transport {
                addr: addr.clone(),
                source: text(source),
            },
            Error::Timeout { addr, after } => Error::Timeout {
                addr: addr.clone(),
                after: *after,
            },
            Error::Http {
                addr,
                status,
                message,
            } => Error::Http {
                addr: addr.clone(),
                status: *status,
                message: message.clone(),
            },
            Error::Decode { what, message } => Error::Decode {
                what: what.clone(),
                message: message.clone(),
            },
            Error::Server { code, message } => Error::Server {
                code: *code,
                message: message.clone(),
            },
            Error::MissedChange { expected, got } => Error::MissedChange {
                expected: *expected,
                got: *got,
            },
            Error::WebSocket { addr, message } => Error::WebSocket {
                addr: addr.clone(),
                message: message.clone(),
            },
            Error::Lagged => Error::Lagged,
            Error::ConnectionLost { reason } => Error::ConnectionLost {
                reason: reason.clone(),
            },
            Error::Exhausted { attempts, last } => Error::Exhausted {
                attempts: *attempts,
                last: Box::new(last.clone_lossy()),
            },
            Error::Closed => Error::Closed,
        }
    }

    pub(crate) fn decode(what: impl Into<String>, e: impl std::fmt::Display) -> Error {
        Error::Decode {
            what: what.into(),
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classification() {
        let http = |status| Error::Http {
            addr: "a:1".into(),
            status,
            message: "m".into(),
        };
        assert!(http(503).is_retryable());
        assert!(http(500).is_retryable());
        assert!(!http(400).is_retryable());
        assert!(!http(401).is_retryable());
        assert!(Error::Timeout {
            addr: "a:1".into(),
            after: Duration::from_secs(1)
        }
        .is_retryable());
        let server = |code| Error::Server {
            code,
            message: "m".into(),
        };
        assert!(server(Some(ErrorCode::Shutdown)).is_retryable());
        assert!(!server(Some(ErrorCode::BadRequest)).is_retryable());
        assert!(!server(None).is_retryable());
        assert!(Error::Exhausted {
            attempts: 3,
            last: Box::new(http(503))
        }
        .is_retryable());
    }

    #[test]
    fn messages_name_the_code() {
        let e = Error::Server {
            code: Some(ErrorCode::TooOld),
            message: "gone".into(),
        };
        assert_eq!(e.to_string(), "node error (too_old): gone");
        let e = Error::MissedChange {
            expected: 5,
            got: Some(7),
        };
        assert!(e.to_string().contains("expected change id 5, got 7"));
    }
}
