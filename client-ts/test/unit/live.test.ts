// LiveState's tests, ported from client-rs/src/live.rs.
import assert from "node:assert/strict";
import { test } from "node:test";
import { LiveState, type LiveUpdate } from "../../src/live.js";
import type { SubscriptionEvent } from "../../src/machine.js";

type E = SubscriptionEvent<string>;
const up = (): LiveUpdate<string> => ({ snapshot: false, reset: null, inserted: [], updated: [], deleted: [], changeId: null });
const ch = (change: "insert" | "update" | "delete", rowId: number, row: string, changeId: number): E => ({ type: "change", change, rowId, row, changeId });

function run(st: LiveState<string>, evs: E[]): [LiveUpdate<string>, boolean] {
  const u = up();
  let ready = false;
  for (const e of evs) ready = st.apply(e, u) || ready;
  return [u, ready];
}

function snapshot(rows: [number, string][], changeId: number): E[] {
  return [
    { type: "columns", columns: ["v"] },
    ...rows.map(([rowId, row]): E => ({ type: "row", rowId, row })),
    { type: "eoq", changeId },
  ];
}

test("snapshot then changes", () => {
  const st = new LiveState<string>();
  const [u, ready] = run(st, snapshot([[1, "a"], [2, "b"]], 0));
  assert.ok(ready && u.snapshot);
  assert.deepEqual(u.inserted, [1, 2]);
  assert.deepEqual(st.columns, ["v"]);
  const [u2, ready2] = run(st, [ch("insert", 3, "c", 1), ch("update", 1, "a2", 2), ch("delete", 2, "b", 3)]);
  assert.ok(ready2 && !u2.snapshot);
  assert.deepEqual([u2.inserted, u2.updated, u2.deleted, u2.changeId], [[3], [1], [[2, "b"]], 3]);
  assert.deepEqual([...st.rows], [[1, "a2"], [3, "c"]]);
});

test("changes within one update net out", () => {
  const st = new LiveState<string>();
  run(st, snapshot([[1, "a"]], 0));
  const [u] = run(st, [ch("insert", 5, "x", 1), ch("update", 5, "y", 2), ch("delete", 5, "y", 3), ch("delete", 1, "a", 4), ch("insert", 1, "a3", 5)]);
  assert.deepEqual([u.inserted, u.deleted, u.updated], [[], [], [1]]);
  assert.equal(st.rows.get(1), "a3");
  assert.ok(!st.rows.has(5));
});

test("a reset keeps the old rows until the new snapshot completes", () => {
  const st = new LiveState<string>();
  run(st, snapshot([[1, "a"], [2, "b"]], 4));
  const u = up();
  assert.ok(!st.apply({ type: "reset", reason: { kind: "node_changed" } }, u));
  assert.ok(!st.apply({ type: "columns", columns: ["v"] }, u));
  assert.ok(!st.apply({ type: "row", rowId: 7, row: "z" }, u));
  assert.equal(st.rows.size, 2, "old rows visible during the new snapshot");
  assert.ok(st.apply({ type: "eoq", changeId: 1 }, u));
  assert.ok(u.snapshot);
  assert.deepEqual(u.reset, { kind: "node_changed" });
  assert.deepEqual(u.inserted, [7]);
  assert.deepEqual([...st.rows.keys()], [7]);
  assert.equal(st.changeId, 1);
});

test("a reset without a snapshot clears on the next change", () => {
  const st = new LiveState<string>();
  run(st, [ch("insert", 1, "a", 1)]);
  const [u, ready] = run(st, [{ type: "reset", reason: { kind: "interrupted" } }, ch("insert", 9, "n", 1)]);
  assert.ok(ready && u.snapshot);
  assert.deepEqual(u.reset, { kind: "interrupted" });
  assert.deepEqual([...st.rows.keys()], [9]);
});
