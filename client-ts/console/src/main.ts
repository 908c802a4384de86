/**
 * The web console: a page served by the node (`/`), built on the TypeScript client. It asks
 * for the bearer token when the node wants one, follows a live query typed in the SQL box, and
 * polls the node's read-only endpoints for the cluster, tables, subscriptions and charts.
 */

import "./style.css";
import { Client, type ConnectionState } from "../../src/index.js";
import { ApiError, NodeApi } from "./api.js";
import { LagChart, RateChart } from "./charts.js";
import { byId } from "./dom.js";
import { renderMembers, renderSubs, renderTables } from "./panels.js";
import { LiveTable } from "./results.js";

const TOKEN_KEY = "verdigris.token";
const base = location.origin;
let token: string | undefined = sessionStorage.getItem(TOKEN_KEY) ?? undefined;
const api = new NodeApi(base, () => token);
let client: Client | null = null;

const banner = byId("banner");
const main = byId("main");
const sql = byId<HTMLTextAreaElement>("sql");
const subscribeBtn = byId<HTMLButtonElement>("subscribe");
const stopBtn = byId<HTMLButtonElement>("stop");
const results = new LiveTable(byId<HTMLTableElement>("result"), byId("sql-status"), byId("sql-error"), (running) => {
  stopBtn.disabled = !running;
});
let rates: RateChart | null = null;
let lag: LagChart | null = null;

/** For tests and the browser benchmark. */
(globalThis as { __verdigrisConsole?: unknown }).__verdigrisConsole = { results };

byId("node-name").textContent = location.host;

function showBanner(msg: string | null): void {
  banner.hidden = msg === null;
  banner.textContent = msg ?? "";
  main.classList.toggle("stale", msg !== null);
}

function showConn(state: ConnectionState, detail?: string): void {
  const pill = byId("conn");
  pill.dataset["state"] = state;
  pill.textContent = state;
  pill.title = detail ?? "WebSocket state";
}

function askToken(message?: string): void {
  main.hidden = true;
  byId("token-form").hidden = false;
  byId("token-error").textContent = message ?? "";
  byId("token").focus();
}

byId("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const t = byId<HTMLInputElement>("token").value.trim();
  token = t === "" ? undefined : t;
  void start();
});

byId("forget-token").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  location.reload();
});

subscribeBtn.addEventListener("click", () => {
  const text = sql.value.trim();
  if (text === "" || client === null) return;
  results.follow(client, text);
});
stopBtn.addEventListener("click", () => results.stop());
sql.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) subscribeBtn.click();
});

/** Checks the token, then shows the console and starts following the node. */
async function start(): Promise<void> {
  try {
    await api.stats();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      askToken(token ? "The node refused this token." : undefined);
      return;
    }
    showBanner(`${(e as Error).message} — retrying…`);
    setTimeout(() => void start(), 2000);
    return;
  }
  showBanner(null);
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  byId("forget-token").hidden = token === undefined;
  byId("token-form").hidden = true;
  main.hidden = false;
  client?.close();
  client = new Client({ nodes: base, ...(token ? { token } : {}) });
  client.onStateChange((s, info) => showConn(s, info.error?.message));
  rates ??= new RateChart(byId("chart-rates"));
  lag ??= new LagChart(byId("chart-lag"));
  poll();
}

let polling = false;
let tick = 0;

/** Refreshes the panels every second (tables every 5 s); a failure shows the banner. */
function poll(): void {
  if (polling) return;
  polling = true;
  const round = async (): Promise<void> => {
    try {
      const [stats, members] = await Promise.all([api.stats(), api.members()]);
      rates!.push(stats);
      lag!.push(members, stats.time);
      renderMembers(byId<HTMLTableElement>("members"), byId("members-count"), members);
      if (tick % 2 === 0) renderSubs(byId<HTMLTableElement>("subs"), (await api.subscriptions()).subscriptions);
      if (tick % 5 === 0) {
        const { tables } = await api.tables();
        renderTables(byId<HTMLTableElement>("tables"), tables, (name) => {
          sql.value = `SELECT * FROM "${name.replace(/"/g, '""')}"`;
          subscribeBtn.click();
        });
        if (sql.value.trim() === "" && tables[0]) sql.value = `SELECT * FROM "${tables[0].name}"`;
      }
      tick++;
      showBanner(null);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        polling = false;
        results.stop();
        askToken("The node no longer accepts this token.");
        return;
      }
      showBanner(`${(e as Error).message} — retrying…`);
    }
    setTimeout(() => void round(), 1000);
  };
  void round();
}

window.addEventListener("resize", () => {
  rates?.resize();
  lag?.resize();
});

void start();
