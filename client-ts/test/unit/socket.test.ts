// The WebSocket driver against a scripted node (like client-rs's ws driver tests): resume after
// a dropped socket, gap → fresh snapshot, too_old, failover, giving up, silent sockets, auth,
// requests cut off by a disconnect, abort.
import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";
import { Client, type ClientOptions, type ConnectionState, type SubscriptionEvent } from "../../src/index.js";
import { FakeSocket, until } from "../support/fake-ws.js";

const fast = { initialMs: 1, maxMs: 5, jitter: "none" as const };

function client(opts: Partial<ClientOptions> = {}): Client {
  return new Client({
    nodes: ["http://a:1", "http://b:2"],
    WebSocket: FakeSocket,
    fetch: (() => Promise.reject(new TypeError("no network in unit tests"))) as typeof fetch,
    backoff: fast,
    ...opts,
  });
}

let clients: Client[] = [];
beforeEach(() => FakeSocket.reset());
afterEach(() => {
  for (const c of clients) c.close();
  clients = [];
});
function track(c: Client): Client {
  clients.push(c);
  return c;
}

function collect<R>(events: SubscriptionEvent<R>[]) {
  return (ev: SubscriptionEvent<R>) => events.push(ev);
}

async function snapshotOn(sock: FakeSocket, id: string, queryId: string, changeId: number): Promise<void> {
  sock.push({ id, columns: ["id", "v"], query_id: queryId, hash: "h" });
  sock.push({ id, row: [1, [1, "a"]] });
  sock.push({ id, eoq: { time: 0, change_id: changeId } });
}

test("a subscription resumes from its last change id after the socket drops", async () => {
  const c = track(client());
  const states: ConnectionState[] = [];
  c.onStateChange((s) => states.push(s));
  const sub = c.subscribe<{ id: number; v: string }>("SELECT id, v FROM t");
  const evs: SubscriptionEvent<{ id: number; v: string }>[] = [];
  sub.on(collect(evs));
  await until(() => FakeSocket.all.length === 1, "a socket");
  const s1 = FakeSocket.last();
  assert.equal(s1.url, "ws://a:1/v1/ws");
  assert.deepEqual(s1.protocols, ["verdigris.v1"]);
  s1.open();
  await until(() => s1.sentOf("subscribe").length === 1, "subscribe");
  const first = s1.sentOf("subscribe")[0]!;
  assert.equal(first.sql, "SELECT id, v FROM t");
  assert.equal(first.from, undefined);
  await snapshotOn(s1, first.id, "q1", 3);
  s1.push({ id: first.id, change: ["insert", 2, [2, "b"], 4] });
  assert.deepEqual(evs.map((e) => e.type), ["columns", "row", "eoq", "change"]);
  assert.deepEqual(evs[1], { type: "row", rowId: 1, row: { id: 1, v: "a" } });
  assert.equal(sub.lastChangeId, 4);
  assert.equal(sub.queryId, "q1");

  s1.drop(1001, "going away");
  await until(() => FakeSocket.all.length === 2, "a new socket");
  const s2 = FakeSocket.last();
  assert.equal(s2.url, "ws://a:1/v1/ws", "the same node: the socket had delivered");
  s2.open();
  await until(() => s2.sentOf("subscribe").length === 1, "resubscribe");
  const again = s2.sentOf("subscribe")[0]!;
  assert.deepEqual([again.query_id, again.from, again.sql], ["q1", 4, undefined]);
  s2.push({ id: again.id, change: ["update", 2, [2, "c"], 5] });
  assert.deepEqual(evs.slice(4), [{ type: "change", change: "update", rowId: 2, row: { id: 2, v: "c" }, changeId: 5 }]);
  assert.deepEqual(states, ["connecting", "open", "reconnecting", "connecting", "open"]);
});

test("a gap in change ids takes a fresh snapshot announced by a reset", async () => {
  const c = track(client());
  const sub = c.subscribe("SELECT id, v FROM t");
  const evs: SubscriptionEvent<unknown>[] = [];
  sub.on(collect(evs));
  await until(() => FakeSocket.all.length === 1);
  const s = FakeSocket.last();
  s.open();
  await until(() => s.sentOf("subscribe").length === 1);
  const id1 = s.sentOf("subscribe")[0]!.id;
  await snapshotOn(s, id1, "q1", 0);
  s.push({ id: id1, change: ["insert", 2, [2, "b"], 1] });
  s.push({ id: id1, change: ["insert", 3, [3, "c"], 3] }); // 2 is missing
  await until(() => s.sentOf("subscribe").length === 2, "a fresh subscribe");
  assert.deepEqual(s.sentOf("unsubscribe").map((m) => m.id), [id1]);
  const fresh = s.sentOf("subscribe")[1]!;
  assert.equal(fresh.from, undefined);
  assert.equal(fresh.query_id, undefined);
  assert.notEqual(fresh.id, id1, "ids are never reused");
  s.push({ id: id1, change: ["insert", 4, [4, "d"], 4] }); // late message for the old id: ignored
  await snapshotOn(s, fresh.id, "q1", 3);
  assert.deepEqual(evs.map((e) => e.type), ["columns", "row", "eoq", "change", "reset", "columns", "row", "eoq"]);
  assert.deepEqual(evs[4], { type: "reset", reason: { kind: "gap", expected: 2, got: 3 } });
});

test("too_old on resume and failover to another node both resnapshot", async () => {
  const c = track(client());
  const sub = c.subscribe("SELECT 1");
  const evs: SubscriptionEvent<unknown>[] = [];
  sub.on(collect(evs));
  await until(() => FakeSocket.all.length === 1);
  let s = FakeSocket.last();
  s.open();
  await until(() => s.sentOf("subscribe").length === 1);
  await snapshotOn(s, s.sentOf("subscribe")[0]!.id, "q1", 7);
  s.drop();
  await until(() => FakeSocket.all.length === 2);
  s = FakeSocket.last();
  s.open();
  await until(() => s.sentOf("subscribe").length === 1);
  const resume = s.sentOf("subscribe")[0]!;
  assert.equal(resume.from, 7);
  s.push({ id: resume.id, error: "the log no longer holds change 8", code: "too_old" });
  await until(() => s.sentOf("subscribe").length === 2, "fresh subscribe after too_old");
  assert.equal(s.sentOf("subscribe")[1]!.from, undefined);
  // The node goes away and node a refuses: the client moves to node b.
  s.drop();
  await until(() => FakeSocket.all.length === 3);
  FakeSocket.last().refuse();
  await until(() => FakeSocket.all.length === 4);
  s = FakeSocket.last();
  assert.equal(s.url, "ws://b:2/v1/ws");
  s.open();
  await until(() => s.sentOf("subscribe").length === 1);
  await snapshotOn(s, s.sentOf("subscribe")[0]!.id, "q9", 2);
  const resets = evs.filter((e) => e.type === "reset");
  assert.deepEqual(resets, [{ type: "reset", reason: { kind: "too_old" } }]);
  assert.equal(sub.node, "http://b:2");
  assert.equal(sub.lastChangeId, 2);
});

test("a subscription moved to another node after a snapshot is reset as node_changed", async () => {
  const c = track(client());
  const sub = c.subscribe("SELECT 1");
  const evs: SubscriptionEvent<unknown>[] = [];
  sub.on(collect(evs));
  await until(() => FakeSocket.all.length === 1);
  let s = FakeSocket.last();
  s.open();
  await until(() => s.sentOf("subscribe").length === 1);
  await snapshotOn(s, s.sentOf("subscribe")[0]!.id, "q1", 4);
  s.drop();
  await until(() => FakeSocket.all.length === 2);
  FakeSocket.last().refuse();
  await until(() => FakeSocket.all.length === 3);
  s = FakeSocket.last();
  assert.equal(s.url, "ws://b:2/v1/ws");
  s.open();
  await until(() => s.sentOf("subscribe").length === 1);
  const fresh = s.sentOf("subscribe")[0]!;
  assert.equal(fresh.from, undefined, "change ids are per node: no resume on another one");
  await snapshotOn(s, fresh.id, "q2", 1);
  assert.deepEqual(evs[3], { type: "reset", reason: { kind: "node_changed" } });
});

test("bad SQL fails the iterator with the node's error", async () => {
  const c = track(client());
  const sub = c.subscribe("SELEC nope");
  const it = sub[Symbol.asyncIterator]();
  const next = it.next();
  await until(() => FakeSocket.all.length === 1);
  const s = FakeSocket.last();
  s.open();
  await until(() => s.sentOf("subscribe").length === 1);
  s.push({ id: s.sentOf("subscribe")[0]!.id, error: "near \"SELEC\": syntax error", code: "bad_request" });
  await assert.rejects(next, (e: Error & { kind?: string; code?: string }) => e.kind === "server" && e.code === "bad_request" && /syntax error/.test(e.message));
  assert.deepEqual(await it.next(), { done: true, value: undefined });
  assert.ok(sub.closed);
});

test("retries are bounded by maxAttempts; a 401 is fatal at once", async () => {
  const c = track(client({ backoff: { ...fast, maxAttempts: 3 } }));
  const failed: Error[] = [];
  c.subscribe("SELECT 1").on(() => undefined, (e) => failed.push(e));
  for (let i = 1; i <= 3; i++) {
    await until(() => FakeSocket.all.length === i, `attempt ${i}`);
    FakeSocket.last().refuse();
  }
  await until(() => failed.length === 1, "the subscription to fail");
  assert.match(failed[0]!.message, /gave up after 3 attempts/);
  assert.equal((failed[0] as { kind?: string }).kind, "exhausted");

  FakeSocket.reset();
  const c2 = track(client({ token: "s3cret" }));
  const failed2: Error[] = [];
  c2.subscribe("SELECT 1").on(() => undefined, (e) => failed2.push(e));
  await until(() => FakeSocket.all.length === 1);
  assert.deepEqual(FakeSocket.last().protocols, ["verdigris.v1", "verdigris.bearer.s3cret"]);
  FakeSocket.last().refuse("Unexpected server response: 401");
  await until(() => failed2.length === 1);
  assert.equal((failed2[0] as { kind?: string }).kind, "unauthorized");
  assert.equal(FakeSocket.all.length, 1, "no retry after a 401");
});

test("a token that is not a subprotocol token goes in the URL", async () => {
  const c = track(client({ token: "a b/c" }));
  c.subscribe("SELECT 1");
  await until(() => FakeSocket.all.length === 1);
  assert.equal(FakeSocket.last().url, "ws://a:1/v1/ws?token=a%20b%2Fc");
  assert.deepEqual(FakeSocket.last().protocols, ["verdigris.v1"]);
});

test("a silent socket is replaced; pings are sent meanwhile", async () => {
  const c = track(client({ pingIntervalMs: 10, idleTimeoutMs: 60 }));
  c.subscribe("SELECT 1");
  await until(() => FakeSocket.all.length === 1);
  const s = FakeSocket.last();
  s.open();
  await until(() => s.sentOf("ping").length >= 2, "pings");
  await until(() => FakeSocket.all.length === 2, "a replacement socket", 2000);
  assert.equal(s.closedByClient, 4000);
});

test("transactions and queries over the socket; a drop fails what was in flight", async () => {
  const c = track(client());
  const tx = c.transaction([["INSERT INTO t VALUES (?)", [12345678901234567890n]]]);
  const q = c.query("SELECT v FROM t");
  await until(() => FakeSocket.all.length === 1);
  const s = FakeSocket.last();
  s.open();
  await until(() => s.sent.length === 2);
  const t = s.sentOf("transaction")[0]!;
  assert.deepEqual(t.statements, [["INSERT INTO t VALUES (?)", [12345678901234567890n]]]);
  s.push(`{"id":"${t.id}","transaction":{"results":[{"rows_affected":1,"time":0}],"time":0,"version":3,"actor_id":"x"}}`);
  assert.equal((await tx).version, 3);
  const qid = s.sentOf("query")[0]!.id;
  s.push({ id: qid, columns: ["v"] });
  s.push(`{"id":"${qid}","row":[1,[12345678901234567890]]}`);
  s.push({ id: qid, eoq: { time: 0.5 } });
  const res = await q;
  assert.deepEqual(res.rows, [{ v: 12345678901234567890n }]);
  assert.deepEqual(res.rowIds, [1]);

  const lost = c.transaction(["DELETE FROM t"]);
  await until(() => s.sentOf("transaction").length === 2);
  s.drop();
  await assert.rejects(lost, (e: { kind?: string }) => e.kind === "connection_lost");
});

test("abort ends an iterator quietly and unsubscribes; an aborted query rejects", async () => {
  const c = track(client());
  const ac = new AbortController();
  const sub = c.subscribe("SELECT 1", undefined, { signal: ac.signal });
  const it = sub[Symbol.asyncIterator]();
  await until(() => FakeSocket.all.length === 1);
  const s = FakeSocket.last();
  s.open();
  await until(() => s.sentOf("subscribe").length === 1);
  const id = s.sentOf("subscribe")[0]!.id;
  s.push({ id, columns: ["x"] });
  assert.equal((await it.next()).value?.type, "columns");
  const pending = it.next();
  ac.abort();
  assert.deepEqual(await pending, { done: true, value: undefined });
  assert.deepEqual(s.sentOf("unsubscribe").map((m) => m.id), [id]);

  const ac2 = new AbortController();
  const q = c.query("SELECT 1", undefined, { signal: ac2.signal });
  ac2.abort();
  await assert.rejects(q, (e: Error) => e.name === "AbortError");
});

test("an iterator that falls behind pauses the subscription and resumes where it was", async () => {
  const c = track(client());
  const sub = c.subscribe<{ x: number }>("SELECT x FROM t", undefined, { bufferSize: 4 });
  const it = sub[Symbol.asyncIterator]();
  await until(() => FakeSocket.all.length === 1);
  const s = FakeSocket.last();
  s.open();
  await until(() => s.sentOf("subscribe").length === 1);
  const id = s.sentOf("subscribe")[0]!.id;
  s.push({ id, columns: ["x"], query_id: "q" });
  s.push({ id, eoq: { time: 0, change_id: 0 } });
  for (let i = 1; i <= 5; i++) s.push({ id, change: ["insert", i, [i], i] });
  assert.deepEqual(s.sentOf("unsubscribe").map((m) => m.id), [id], "paused on the node");
  const seen: number[] = [];
  for (let i = 0; i < 2 + 4; i++) {
    const ev = (await it.next()).value!;
    if (ev.type === "change") seen.push(ev.changeId);
  }
  await until(() => s.sentOf("subscribe").length === 2, "resumed");
  const resume = s.sentOf("subscribe")[1]!;
  assert.deepEqual([resume.query_id, resume.from], ["q", 5]);
  s.push({ id: resume.id, change: ["insert", 6, [6], 6] });
  for (let i = 0; i < 2; i++) {
    const ev = (await it.next()).value!;
    if (ev.type === "change") seen.push(ev.changeId);
  }
  assert.deepEqual(seen, [1, 2, 3, 4, 5, 6]);
});
