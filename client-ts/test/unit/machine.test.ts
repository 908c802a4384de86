// The state machine's tests, ported from client-rs/src/sub.rs.
import assert from "node:assert/strict";
import { test } from "node:test";
import { classify, Machine, type NodeEvent, type Step, type SubscriptionEvent } from "../../src/machine.js";

type Ev = NodeEvent<number>;
const change = (kind: "insert" | "update" | "delete", rowId: number, row: number, changeId: number): Ev => ({
  type: "change",
  change: kind,
  rowId,
  row,
  changeId,
});

function feed(m: Machine, evs: Ev[]): [SubscriptionEvent<number>[], Step[]] {
  const out: SubscriptionEvent<number>[] = [];
  const steps = evs.map((e) => m.event(e, out));
  return [out, steps];
}

function snapshot(changeId: number): Ev[] {
  return [
    { type: "columns", columns: ["x"] },
    { type: "row", rowId: 1, row: 10 },
    { type: "eoq", changeId },
  ];
}

test("follows contiguous changes and plans a resume", () => {
  const m = new Machine(false, true);
  assert.deepEqual(m.plan(), { kind: "fresh" });
  const out: SubscriptionEvent<number>[] = [];
  m.started(0, false, out);
  m.identity("q", "h");
  assert.equal(feed(m, snapshot(3))[0].length, 3);
  const [evs, steps] = feed(m, [change("insert", 2, 20, 4), change("update", 2, 21, 5)]);
  assert.ok(steps.every((s) => s.kind === "continue"));
  assert.deepEqual(evs[1], change("update", 2, 21, 5));
  assert.equal(m.last, 5);
  assert.deepEqual(m.plan(), { kind: "resume", node: 0, queryId: "q", from: 5 });
  m.started(0, true, out);
  assert.deepEqual(feed(m, [change("delete", 2, 21, 6)])[0], [change("delete", 2, 21, 6)]);
  assert.equal(out.length, 0);
});

test("duplicates are skipped and gaps take a fresh snapshot", () => {
  const m = new Machine(false, true);
  feed(m, snapshot(0));
  assert.equal(feed(m, [change("insert", 2, 1, 1), change("insert", 2, 1, 1)])[0].length, 1);
  const [evs, steps] = feed(m, [change("insert", 3, 1, 3)]);
  assert.equal(evs.length, 0, "the change after a gap is not delivered");
  assert.equal(steps[0]!.kind, "reopen");
  assert.deepEqual(m.plan(), { kind: "fresh" });
  const out: SubscriptionEvent<number>[] = [];
  m.started(0, false, out);
  const [evs2] = feed(m, snapshot(9));
  assert.deepEqual(evs2[0], { type: "reset", reason: { kind: "gap", expected: 2, got: 3 } });
  assert.deepEqual(evs2[1], { type: "columns", columns: ["x"] });
  assert.equal(m.last, 9);
});

test("gaps are errors when asked", () => {
  const m = new Machine(false, false);
  feed(m, snapshot(4));
  const step = feed(m, [change("insert", 3, 1, 6)])[1][0]!;
  assert.equal(step.kind, "fatal");
  if (step.kind === "fatal") {
    assert.equal(step.error.kind, "missed_change");
    assert.equal(step.error.expected, 5);
    assert.equal(step.error.got, 6);
  }
  const m2 = new Machine(false, false);
  feed(m2, snapshot(4));
  const s2 = m2.error("too_old", "old");
  assert.ok(s2.kind === "fatal" && s2.error.kind === "missed_change" && s2.error.expected === 5 && s2.error.got === undefined);
});

test("failover to another node resets at the next snapshot", () => {
  const m = new Machine(false, true);
  const out: SubscriptionEvent<number>[] = [];
  m.started(0, false, out);
  feed(m, snapshot(7));
  assert.deepEqual(m.plan(), { kind: "resume", node: 0, queryId: null, from: 7 });
  m.started(1, false, out);
  assert.equal(out.length, 0, "the old rows stay until the new snapshot arrives");
  assert.equal(m.last, null);
  const [evs] = feed(m, snapshot(2));
  assert.deepEqual(evs[0], { type: "reset", reason: { kind: "node_changed" } });
  assert.deepEqual(m.plan(), { kind: "resume", node: 1, queryId: null, from: 2 });
});

test("an interrupted snapshot resets before the next; a resume answered by a snapshot too", () => {
  const m = new Machine(false, true);
  const out: SubscriptionEvent<number>[] = [];
  m.started(0, false, out);
  feed(m, [{ type: "columns", columns: [] }, { type: "row", rowId: 1, row: 1 }]);
  assert.deepEqual(m.plan(), { kind: "fresh" });
  m.started(0, false, out);
  assert.deepEqual(feed(m, snapshot(1))[0][0], { type: "reset", reason: { kind: "interrupted" } });
  const m2 = new Machine(false, true);
  feed(m2, snapshot(0));
  m2.started(0, true, out);
  const [evs] = feed(m2, snapshot(0));
  assert.deepEqual(evs[0], { type: "reset", reason: { kind: "interrupted" } });
  assert.equal(evs.length, 4);
});

test("errors are classified like the Rust client", () => {
  assert.deepEqual(classify(undefined, "subscriber too slow: disconnected after change id 42; resume with …"), { kind: "too_slow", at: 42 });
  assert.deepEqual(classify(undefined, "subscription already deleted older changes (min change id: 9)"), {
    kind: "resnapshot",
    reason: { kind: "too_old" },
  });
  assert.deepEqual(classify(undefined, "from=9 is ahead of this subscription's last change id 2"), { kind: "resnapshot", reason: { kind: "too_old" } });
  assert.deepEqual(classify(undefined, "could not find subscription with id x"), { kind: "resnapshot", reason: { kind: "not_found" } });
  assert.deepEqual(classify(undefined, "something else"), { kind: "transient" });
  assert.deepEqual(classify("too_slow", "m", 5), { kind: "too_slow", at: 5 });
  assert.deepEqual(classify("too_old", "m"), { kind: "resnapshot", reason: { kind: "too_old" } });
  assert.deepEqual(classify("not_found", "m"), { kind: "resnapshot", reason: { kind: "not_found" } });
  assert.deepEqual(classify("bad_request", "m"), { kind: "fatal" });
  assert.deepEqual(classify("bad_request", "from=9 is ahead of this subscription's last change id 2"), {
    kind: "resnapshot",
    reason: { kind: "too_old" },
  });
  assert.deepEqual(classify("limit", "m"), { kind: "fatal" });
  assert.deepEqual(classify("shutdown", "m"), { kind: "transient" });
  assert.deepEqual(classify("internal", "m"), { kind: "transient" });
});

test("errors drive the plan", () => {
  const m = new Machine(false, true);
  const out: SubscriptionEvent<number>[] = [];
  m.started(2, false, out);
  m.identity("q");
  feed(m, snapshot(5));
  assert.equal(m.error("too_slow", "slow", 5).kind, "reopen");
  assert.deepEqual(m.plan(), { kind: "resume", node: 2, queryId: "q", from: 5 });
  const [, steps] = feed(m, [{ type: "error", message: "subscription already deleted older changes (min change id: 9)" }]);
  assert.equal(steps[0]!.kind, "reopen");
  assert.deepEqual(m.plan(), { kind: "fresh" });
  const bad = m.error("bad_request", "no such table: x");
  assert.ok(bad.kind === "fatal" && bad.error.kind === "server" && bad.error.code === "bad_request");
});

test("skip_rows resets when the history changes", () => {
  const m = new Machine(true, true);
  const out: SubscriptionEvent<number>[] = [];
  m.started(0, false, out);
  assert.equal(feed(m, [change("insert", 1, 1, 7)])[0].length, 1);
  assert.deepEqual(m.plan(), { kind: "resume", node: 0, queryId: null, from: 7 });
  m.started(1, false, out);
  assert.deepEqual(out.shift(), { type: "reset", reason: { kind: "node_changed" } });
  assert.deepEqual(feed(m, [change("insert", 1, 1, 3)])[0], [change("insert", 1, 1, 3)]);
});
