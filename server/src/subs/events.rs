//! NDJSON encoding of subscription events (Corrosion's `TypedQueryEvent` shapes).

use crate::api::json;
use rusqlite::types::Value;
use serde_json::json;
use verdigris_subscriptions::RowChange;

fn line(out: &mut Vec<u8>, v: serde_json::Value) {
    serde_json::to_writer(&mut *out, &v).expect("json");
    out.push(b'\n');
}

pub fn columns(out: &mut Vec<u8>, cols: &[String]) {
    line(out, json!({ "columns": cols }));
}

pub fn row(out: &mut Vec<u8>, row_id: u64, cells: &[Value]) {
    line(out, json!({ "row": [row_id, json::cells(cells)] }));
}

pub fn eoq(out: &mut Vec<u8>, time: f64, change_id: u64) {
    line(
        out,
        json!({ "eoq": { "time": time, "change_id": change_id } }),
    );
}

pub fn change(out: &mut Vec<u8>, c: &RowChange, change_id: u64) {
    line(
        out,
        json!({ "change": [c.kind.as_str(), c.row_id, json::cells(&c.cells), change_id] }),
    );
}

pub fn notify(out: &mut Vec<u8>, kind: &str, pk: &[Value]) {
    line(out, json!({ "notify": [kind, json::cells(pk)] }));
}

pub fn error(out: &mut Vec<u8>, msg: &str) {
    line(out, json!({ "error": msg }));
}
