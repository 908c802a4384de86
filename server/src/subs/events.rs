//! Subscription events as listeners receive them (pure): the snapshot a listener starts from
//! and change events.

use verdigris_api_types::{QueryEvent, SqliteValue, TypedQueryEvent};
use verdigris_subscriptions::{ChangeKind, RowChange};

/// The snapshot a listener starts from: `columns`, every row, `eoq` with the change id the
/// snapshot is at.
pub(super) fn snapshot_events(
    columns: &[String],
    rows: Vec<(u64, Vec<rusqlite::types::Value>)>,
    time: f64,
    change_id: u64,
) -> Vec<QueryEvent> {
    let mut out = Vec::with_capacity(rows.len() + 2);
    out.push(TypedQueryEvent::Columns(columns.to_vec()));
    out.extend(
        rows.into_iter()
            .map(|(rid, cells)| TypedQueryEvent::Row(rid, wire_cells(cells))),
    );
    out.push(TypedQueryEvent::EndOfQuery {
        time,
        change_id: Some(change_id),
    });
    out
}

pub(super) fn change_event(c: RowChange, change_id: u64) -> QueryEvent {
    let kind = match c.kind {
        ChangeKind::Insert => verdigris_api_types::ChangeType::Insert,
        ChangeKind::Update => verdigris_api_types::ChangeType::Update,
        ChangeKind::Delete => verdigris_api_types::ChangeType::Delete,
    };
    TypedQueryEvent::Change(kind, c.row_id, wire_cells(c.cells), change_id)
}

/// Change events for `changes`, numbered from `first`.
pub(super) fn change_events(changes: Vec<RowChange>, first: u64) -> Vec<QueryEvent> {
    changes
        .into_iter()
        .zip(first..)
        .map(|(c, cid)| change_event(c, cid))
        .collect()
}

pub(super) fn wire_cells(cells: Vec<rusqlite::types::Value>) -> Vec<SqliteValue> {
    cells.into_iter().map(SqliteValue::from).collect()
}
