// The client against real `verdigris` nodes: queries and transactions over both transports,
// exact 64-bit integers, subscriptions and live queries following HTTP writes, errors, auth,
// resume across a node restart, failover to another node.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import WebSocket from "ws";
import { Client, VerdigrisError, type ClientOptions, type ConnectionState, type LiveUpdate, type SubscriptionEvent } from "../../src/index.js";
import { eventually, freeTcpPort, NodeDir, type TestNode } from "../support/node.js";

type Todo = { id: number; title: string; done: number; big: bigint | number | null };

const cleanup: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

async function node(opts: ConstructorParameters<typeof NodeDir>[0] = {}): Promise<TestNode> {
  const dir = new NodeDir(opts);
  const n = await dir.start();
  cleanup.push(async () => {
    await n.kill();
    dir.remove();
  });
  return n;
}

function client(nodes: string | string[], extra: Partial<ClientOptions> = {}): Client {
  const c = new Client({ nodes, WebSocket, backoff: { initialMs: 20, maxMs: 200 }, ...extra });
  cleanup.push(() => c.close());
  return c;
}

test("queries and transactions over the WebSocket and over HTTP, with exact 64-bit integers", async () => {
  const n = await node();
  const c = client(n.url);
  const max = 9223372036854775807n;
  for (const transport of ["websocket", "http"] as const) {
    const id = transport === "http" ? 2 : 1;
    const r = await c.transaction([["INSERT INTO todos (id, title, big) VALUES (?, ?, ?)", [id, `via ${transport}`, max - BigInt(id)]]], { transport });
    assert.equal(r.results[0]!.rows_affected, 1);
    assert.equal(typeof r.version, "number");
  }
  for (const transport of ["websocket", "http"] as const) {
    const q = await c.query<Todo>("SELECT id, title, big FROM todos WHERE big > ? ORDER BY id", [9007199254740993n], { transport });
    assert.deepEqual(q.columns, ["id", "title", "big"]);
    assert.deepEqual(q.rows, [
      { id: 1, title: "via websocket", big: 9223372036854775806n },
      { id: 2, title: "via http", big: 9223372036854775805n },
    ]);
    assert.deepEqual(q.rowIds, [1, 2]);
  }
  // Named parameters, and a row mapper.
  const q = await c.query("SELECT title FROM todos WHERE id = :id", { ":id": 2 }, { mapRow: (cells) => cells[0] as string });
  assert.deepEqual(q.rows, ["via http"]);
  assert.equal(c.state, "open");
});

test("bad SQL is a clear error on every path, and the socket carries on", async () => {
  const n = await node();
  const c = client(n.url);
  await assert.rejects(c.query("SELEC 1"), (e: VerdigrisError) => e.kind === "server" && e.code === "bad_request" && /syntax/i.test(e.message));
  await assert.rejects(c.query("SELECT * FROM nope", undefined, { transport: "http" }), (e: VerdigrisError) => e.status === 400 && /no such table/.test(e.message));
  await assert.rejects(c.transaction(["INSERT INTO nope VALUES (1)"]), (e: VerdigrisError) => e.code === "bad_request" && /nope/.test(e.message));
  const it = c.subscribe("SELECT * FROM missing_table")[Symbol.asyncIterator]();
  await assert.rejects(it.next(), (e: VerdigrisError) => e.kind === "server" && /missing_table/.test(e.message));
  assert.equal((await c.query("SELECT 1 AS one")).rows[0]!["one"], 1);
});

test("a subscription and a live query follow inserts, updates and deletes made over HTTP", async () => {
  const n = await node();
  await n.exec(["INSERT INTO todos (id, title) VALUES (1, 'one')"]);
  const c = client(n.url);
  const events: SubscriptionEvent<Todo>[] = [];
  const sub = c.subscribe<Todo>("SELECT id, title, done FROM todos WHERE done = 0");
  sub.on((e) => events.push(e));
  const live = c.liveQuery<Todo>("SELECT id, title FROM todos ORDER BY id");
  const updates: LiveUpdate<Todo>[] = [];
  live.on((u) => updates.push(u));
  await live.ready;
  assert.deepEqual([...live.rows.values()], [{ id: 1, title: "one" }]);
  await eventually(() => events.some((e) => e.type === "eoq"), "the subscription's snapshot");

  // Each write lands on both before the next: the two are separate subscriptions, each
  // maintained on its own, and one may fold writes that arrive together into one change.
  const changes = () => events.filter((e) => e.type === "change").length;
  await n.exec(["INSERT INTO todos (id, title) VALUES (2, 'two')"]);
  await eventually(() => live.rows.size === 2 && changes() === 1, "the insert");
  await n.exec(["UPDATE todos SET title = 'TWO' WHERE id = 2"]);
  await eventually(() => [...live.rows.values()].some((r) => r.title === "TWO") && changes() === 2, "the update");
  await n.exec(["DELETE FROM todos WHERE id = 1"]);
  await eventually(() => live.rows.size === 1 && changes() === 3, "the delete");
  await n.exec(["UPDATE todos SET done = 1 WHERE id = 2"]);
  await eventually(() => changes() === 4, "four changes on the filtered subscription");

  const kinds = events.filter((e) => e.type === "change").map((e) => (e.type === "change" ? [e.change, e.row.id, e.changeId] : []));
  assert.deepEqual(kinds, [["insert", 2, 1], ["update", 2, 2], ["delete", 1, 3], ["delete", 2, 4]]);
  const flat = updates.slice(1).map((u) => [u.inserted, u.updated, u.deleted.map(([id]) => id)]);
  assert.deepEqual(flat, [[[2], [], []], [[], [2], []], [[], [], [1]]]);
  assert.equal(live.changeId, 3);
  assert.ok(sub.queryId && /^[0-9a-f-]{36}$/.test(sub.queryId), `query id ${sub.queryId}`);
});

test("with a bearer token: refused without it (no retries), served with it", async () => {
  const n = await node({ token: "s3cret-T0ken" });
  const anon = client(n.url);
  await assert.rejects(anon.query("SELECT 1"), (e: VerdigrisError) => e.kind === "unauthorized");
  await assert.rejects(anon.query("SELECT 1", undefined, { transport: "http" }), (e: VerdigrisError) => e.kind === "unauthorized" && e.status === 401);
  const ok = client(n.url, { token: "s3cret-T0ken" });
  assert.equal((await ok.transaction(["INSERT INTO todos (id) VALUES (5)"], { transport: "http" })).results.length, 1);
  const live = ok.liveQuery("SELECT id FROM todos");
  await live.ready;
  assert.deepEqual([...live.rows.values()], [{ id: 5 }]);
  // A token that is not a subprotocol token travels in the URL.
  const odd = await node({ token: "with space" });
  const c = client(odd.url, { token: "with space" });
  assert.equal((await c.query("SELECT 2 AS y")).rows[0]!["y"], 2);
});

test("a subscription resumes across a node restart without a reset; states are reported", async () => {
  const port = await freeTcpPort();
  const dir = new NodeDir({ apiPort: port });
  let n = await dir.start();
  cleanup.push(async () => {
    await n.kill();
    dir.remove();
  });
  const c = client(n.url);
  const states: ConnectionState[] = [];
  c.onStateChange((s) => states.push(s));
  const events: SubscriptionEvent<Todo>[] = [];
  c.subscribe<Todo>("SELECT id, title FROM todos").on((e) => events.push(e));
  await eventually(() => events.some((e) => e.type === "eoq"), "the snapshot");
  await n.exec(["INSERT INTO todos (id, title) VALUES (1, 'before')"]);
  await eventually(() => events.some((e) => e.type === "change"), "the first change");
  await n.stop();
  await eventually(() => states.includes("reconnecting"), "a reconnecting state");
  // Written while the client is away: it must arrive as the next change id, not as a reset.
  n = await dir.start();
  await n.exec(["INSERT INTO todos (id, title) VALUES (2, 'after')"]);
  await eventually(() => events.filter((e) => e.type === "change").length === 2, "the change made after the restart");
  assert.ok(!events.some((e) => e.type === "reset"), JSON.stringify(events));
  const changes = events.filter((e) => e.type === "change");
  assert.deepEqual(changes.map((e) => (e.type === "change" ? e.changeId : 0)), [1, 2]);
  assert.equal(states.at(-1), "open");
});

test("failover: when its node stops, a subscription moves to the next node with a reset and a fresh snapshot", async () => {
  const a = await node();
  const b = await node();
  await a.exec(["INSERT INTO todos (id, title) VALUES (1, 'on a')"]);
  await b.exec(["INSERT INTO todos (id, title) VALUES (1, 'on b')"]);
  const c = client([a.url, b.url]);
  const live = c.liveQuery<Todo>("SELECT id, title FROM todos");
  const updates: LiveUpdate<Todo>[] = [];
  live.on((u) => updates.push(u));
  await live.ready;
  assert.equal(live.rows.get(1)?.title, "on a");
  assert.equal(live.subscription.node, a.url);
  await a.stop();
  await eventually(() => live.rows.get(1)?.title === "on b", "rows from node b");
  const last = updates.at(-1)!;
  assert.ok(last.snapshot);
  assert.deepEqual(last.reset, { kind: "node_changed" });
  assert.equal(live.subscription.node, b.url);
  // HTTP requests fail over too.
  assert.equal((await c.query<Todo>("SELECT title FROM todos", undefined, { transport: "http" })).rows[0]!.title, "on b");
});
