/** The console's polled panels: cluster members, tables, subscriptions. */

import type { Members, SubInfo, TableInfo } from "./api.js";
import { ago, el, fillBody, tr } from "./dom.js";

function short(id: string): string {
  return id.length > 12 ? `${id.slice(0, 8)}…` : id;
}

function ms(v: number | null): string {
  return v === null ? "—" : `${v.toFixed(1)} ms`;
}

/** Lag shown only while changes flow (an idle member has no lag). */
export function currentLag(lag: number | null, appliedSecsAgo: number | null): number {
  return lag !== null && appliedSecsAgo !== null && appliedSecsAgo < 10 ? lag : 0;
}

export function renderMembers(table: HTMLTableElement, count: HTMLElement, m: Members): void {
  const self = tr([short(m.actor_id), m.gossip_addr ?? "—", "this node", "—", "now", m.head, m.gaps, "—"]);
  self.cells[2]!.className = "state-alive";
  self.title = m.actor_id;
  self.dataset["actor"] = m.actor_id;
  const rows = [self];
  for (const x of m.members) {
    const lag = currentLag(x.lag_secs, x.last_applied_secs);
    const r = tr([short(x.actor_id), x.address, x.state, ms(x.rtt_ms), ago(x.last_seen_secs), x.head, x.gaps, `${(lag * 1000).toFixed(0)} ms`]);
    r.cells[2]!.className = `state-${x.state}`;
    r.title = x.actor_id;
    r.dataset["actor"] = x.actor_id;
    rows.push(r);
  }
  fillBody(table, rows);
  const alive = m.members.filter((x) => x.state === "alive").length + 1;
  count.textContent = `${alive} of ${m.members.length + 1} alive`;
}

export function renderTables(table: HTMLTableElement, tables: TableInfo[], pick: (name: string) => void): void {
  fillBody(
    table,
    tables.map((t) => {
      const r = tr([t.name, t.rows, t.columns.join(", ")]);
      r.cells[0]!.addEventListener("click", () => pick(t.name));
      return r;
    }),
  );
  if (tables.length === 0) fillBody(table, [tr(["no replicated tables: add schema files and run `verdigris reload`", "", ""])]);
}

export function renderSubs(table: HTMLTableElement, subs: SubInfo[]): void {
  fillBody(
    table,
    subs.map((s) => {
      const r = tr([short(s.id), s.sql, s.plan, s.rows, s.listeners, s.last_change_id]);
      r.cells[1]!.className = "sqltext";
      r.title = s.id;
      return r;
    }),
  );
  if (subs.length === 0) fillBody(table, [tr([el("td", "none") as HTMLTableCellElement])]);
}
