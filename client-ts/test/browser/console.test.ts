// The web console in a real browser against real nodes: token prompt, a live query following
// inserts, updates and deletes made over HTTP (and one replicated from the other node), bad SQL,
// the members view of a 2-node cluster, and the banner when the node goes down. Saves a
// screenshot to client-ts/test-artifacts/console.png (and to docs/console.png with
// UPDATE_DOCS_SCREENSHOT=1).
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import type { Page } from "playwright-core";
import { launch } from "../support/browser.js";
import { eventually, freeUdpPort, NodeDir, type TestNode } from "../support/node.js";

const TOKEN = "console-test-token";
const root = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
export const SCREENSHOT = resolve(root, "test-artifacts/console.png");

const cleanup: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

async function cluster(): Promise<[TestNode, TestNode]> {
  const [ga, gb] = [await freeUdpPort(), await freeUdpPort()];
  const da = new NodeDir({ token: TOKEN, gossipPort: ga, bootstrap: [`127.0.0.1:${gb}`] });
  const db = new NodeDir({ token: TOKEN, gossipPort: gb, bootstrap: [`127.0.0.1:${ga}`] });
  const a = await da.start();
  const b = await db.start();
  cleanup.push(async () => {
    await a.kill();
    await b.kill();
    da.remove();
    db.remove();
  });
  return [a, b];
}

/** The result table's row with this id: its text and class, or null. */
function resultRow(page: Page, id: number): Promise<{ text: string; cls: string } | null> {
  return page.evaluate((id) => {
    for (const tr of document.querySelectorAll<HTMLTableRowElement>("#result tbody tr")) {
      if (tr.cells[0]?.textContent === String(id)) return { text: tr.textContent ?? "", cls: tr.className };
    }
    return null;
  }, id);
}

async function waitRow(page: Page, id: number, ok: (r: { text: string; cls: string } | null) => boolean, what: string): Promise<void> {
  await eventually(async () => ok(await resultRow(page, id)), what, 10_000);
}

test("the console follows a live query, shows the cluster and reports errors", async () => {
  const [a, b] = await cluster();
  await a.exec(["INSERT INTO todos (id, title) VALUES (1, 'write docs'), (2, 'ship it'), (3, 'celebrate')"]);
  const browser = await launch();
  cleanup.push(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1360, height: 900 } });
  const pageErrors: string[] = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));

  // The node wants a token: the console asks, refuses a wrong one, accepts the right one.
  await page.goto(a.url);
  await page.waitForSelector("#token-form:not([hidden])");
  await page.fill("#token", "wrong");
  await page.click("#token-form button");
  await page.waitForFunction(() => /refused/.test(document.querySelector("#token-error")?.textContent ?? ""));
  await page.fill("#token", TOKEN);
  await page.click("#token-form button");
  await page.waitForSelector("#main:not([hidden])");

  // Bad SQL is shown, not a blank table.
  await page.fill("#sql", "SELEC nope");
  await page.click("#subscribe");
  await page.waitForFunction(() => /syntax error/.test(document.querySelector("#sql-error")?.textContent ?? ""));

  // A live query follows each write made over HTTP.
  await page.fill("#sql", "SELECT id, title, done FROM todos ORDER BY id");
  await page.click("#subscribe");
  await page.waitForFunction(() => document.querySelectorAll("#result tbody tr").length === 3);
  assert.equal(await page.textContent("#sql-error"), "");
  assert.deepEqual(await page.$$eval("#result thead th", (ths) => ths.map((t) => t.textContent)), ["id", "title", "done"]);
  await page.waitForFunction(() => document.querySelector("#conn")?.textContent === "open");

  await a.exec(["INSERT INTO todos (id, title) VALUES (4, 'alpha')"]);
  await waitRow(page, 4, (r) => r !== null && r.text.includes("alpha") && r.cls === "ins", "row 4 inserted and marked");
  await a.exec(["UPDATE todos SET title = 'beta', done = 1 WHERE id = 4"]);
  await waitRow(page, 4, (r) => r !== null && r.text.includes("beta") && r.cls === "upd", "row 4 updated and marked");
  await a.exec(["DELETE FROM todos WHERE id = 2"]);
  await waitRow(page, 2, (r) => r !== null && r.cls === "del", "row 2 marked deleted");
  await waitRow(page, 2, (r) => r === null, "row 2 removed");
  // A write on the other node arrives by replication.
  await b.exec(["INSERT INTO todos (id, title) VALUES (5, 'from node b')"]);
  await waitRow(page, 5, (r) => r !== null && r.text.includes("from node b"), "row 5 replicated from node b");
  assert.match((await page.textContent("#sql-status")) ?? "", /^4 rows · change id 4 · /);

  // Members of the 2-node cluster, both alive; tables and subscriptions panels filled.
  const bActor = ((await b.get("/v1/cluster/members")) as { actor_id: string }).actor_id;
  await page.waitForFunction(
    (actor) => {
      const row = document.querySelector(`#members tr[data-actor="${actor}"]`) as HTMLTableRowElement | null;
      return row?.cells[2]?.textContent === "alive" && document.querySelectorAll("#members tbody tr").length === 2;
    },
    bActor,
    { timeout: 15_000 },
  );
  assert.match((await page.textContent("#members-count")) ?? "", /2 of 2 alive/);
  await page.waitForFunction(() => /todos/.test(document.querySelector("#tables tbody")?.textContent ?? ""));
  await page.waitForFunction(() => /SELECT id, title, done FROM todos/i.test(document.querySelector("#subs tbody")?.textContent ?? ""));
  await page.waitForFunction(() => document.querySelectorAll("#chart-rates canvas").length > 0);

  // A screenshot with a freshly inserted row marked.
  await a.exec(["INSERT INTO todos (id, title) VALUES (6, 'just inserted')"]);
  await waitRow(page, 6, (r) => r?.cls === "ins", "row 6 marked");
  mkdirSync(dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  // The README's picture: refreshed on request, so test runs leave the work tree alone.
  if (process.env["UPDATE_DOCS_SCREENSHOT"]) copyFileSync(SCREENSHOT, resolve(root, "../docs/console.png"));

  // The node goes down: a clear banner, and the WebSocket reports it is reconnecting.
  await a.stop();
  await page.waitForFunction(() => /cannot reach the node/.test(document.querySelector("#banner")?.textContent ?? ""), undefined, { timeout: 15_000 });
  await page.waitForFunction(() => document.querySelector("#conn")?.textContent !== "open");
  assert.deepEqual(pageErrors, []);
});
