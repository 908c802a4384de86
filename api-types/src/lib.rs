//! Wire types of the Verdigris API, defined once and shared by the node (`verdigris`) and the
//! clients (`verdigris-client`, and the TypeScript client via `docs/websocket.md`).
//!
//! The HTTP/NDJSON formats are Corrosion's, byte for byte:
//! - [`Statement`]: a SQL statement in any of its four JSON forms.
//! - [`ExecResponse`]: the answer to `POST /v1/transactions`.
//! - [`QueryEvent`] / [`TypedQueryEvent`]: one NDJSON line of `/v1/queries` and
//!   `/v1/subscriptions` (`columns`, `row`, `eoq`, `change`, `error`).
//! - [`NotifyEvent`]: one line of `/v1/updates/{table}`.
//!
//! The WebSocket protocol (`GET /v1/ws`) wraps the same events: [`ws::ClientMessage`] and
//! [`ws::ServerMessage`].

mod events;
mod statement;
mod value;
pub mod ws;

pub use events::{
    ChangeId, ChangeType, ExecResponse, ExecResult, NotifyEvent, NotifyKind, QueryEvent, RowId,
    TypedQueryEvent,
};
pub use statement::Statement;
pub use value::SqliteValue;

/// Response header naming the subscription a stream belongs to.
pub const QUERY_ID_HEADER: &str = "corro-query-id";
/// Response header with the stable hash of a subscription's SQL.
pub const QUERY_HASH_HEADER: &str = "corro-query-hash";
