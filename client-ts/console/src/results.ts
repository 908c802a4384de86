/**
 * The SQL box's live result table: follows a {@link LiveQuery} and patches the table as rows
 * change, marking inserted, updated and deleted rows for a moment (deleted rows leave after
 * it). Updates are applied once per animation frame; the delay from an update's arrival to
 * its application is recorded (`eventToDomMs`, read by the browser benchmark).
 */

import { arrayRow, type Client, type LiveQuery, type LiveUpdate, type RowId, type SqliteValue } from "../../src/index.js";
import { cell, el, setCell } from "./dom.js";

type Row = SqliteValue[];

/** How long a changed row stays marked. */
const FLASH_MS = 1500;
/** Latency samples kept. */
const MAX_SAMPLES = 100_000;

export class LiveTable {
  private live: LiveQuery<Row> | null = null;
  private readonly trs = new Map<RowId, HTMLTableRowElement>();
  private pending: { up: LiveUpdate<Row>; at: number }[] = [];
  private frame = 0;
  /** Milliseconds from an update's arrival to its rows being in the DOM. */
  readonly eventToDomMs: number[] = [];

  constructor(
    private readonly table: HTMLTableElement,
    private readonly status: HTMLElement,
    private readonly error: HTMLElement,
    private readonly onRunning: (running: boolean) => void,
  ) {}

  /** Subscribes to `sql` (replacing the current subscription). */
  follow(client: Client, sql: string): void {
    this.stop();
    this.error.textContent = "";
    this.status.textContent = "subscribing…";
    this.table.tHead!.replaceChildren();
    this.table.tBodies[0]!.replaceChildren();
    this.trs.clear();
    const live = client.liveQuery<Row>(sql, undefined, { mapRow: arrayRow });
    this.live = live;
    this.onRunning(true);
    live.on(
      (up) => {
        if (this.live !== live) return;
        this.pending.push({ up, at: performance.now() });
        if (this.frame === 0) this.frame = requestAnimationFrame(() => this.flush());
      },
      (e) => {
        if (this.live !== live) return;
        this.error.textContent = e.message;
        this.status.textContent = "stopped";
        this.live = null;
        this.onRunning(false);
      },
    );
  }

  stop(): void {
    this.live?.close();
    this.live = null;
    this.pending = [];
    this.onRunning(false);
    if (this.status.textContent === "subscribing…") this.status.textContent = "";
  }

  private flush(): void {
    this.frame = 0;
    const live = this.live;
    const batch = this.pending;
    this.pending = [];
    if (live === null) return;
    for (const { up } of batch) this.apply(live, up);
    const now = performance.now();
    for (const { at } of batch) {
      if (this.eventToDomMs.length >= MAX_SAMPLES) this.eventToDomMs.shift();
      this.eventToDomMs.push(now - at);
    }
    const node = live.subscription.node ?? "";
    this.status.textContent = `${live.rows.size} rows · change id ${live.changeId ?? "—"} · ${node}`;
  }

  private apply(live: LiveQuery<Row>, up: LiveUpdate<Row>): void {
    const body = this.table.tBodies[0]!;
    if (up.snapshot) {
      this.table.tHead!.replaceChildren(el("tr", live.columns.map((c) => el("th", c))));
      this.trs.clear();
      const rows: HTMLTableRowElement[] = [];
      for (const [rid, row] of live.rows) rows.push(this.row(rid, row));
      body.replaceChildren(...rows);
      if (up.reset !== null) this.error.textContent = `fresh snapshot (${up.reset.kind.replace("_", " ")})`;
      return;
    }
    for (const rid of up.inserted) {
      const row = live.rows.get(rid);
      if (row === undefined) continue;
      const old = this.trs.get(rid);
      const tr = this.row(rid, row);
      if (old) old.replaceWith(tr);
      else body.append(tr);
      this.flash(tr, "ins");
    }
    for (const rid of up.updated) {
      const row = live.rows.get(rid);
      const tr = this.trs.get(rid);
      if (row === undefined || tr === undefined) continue;
      row.forEach((v, i) => {
        const td = tr.cells[i] ?? tr.appendChild(document.createElement("td"));
        setCell(td, v);
      });
      this.flash(tr, "upd");
    }
    for (const [rid] of up.deleted) {
      const tr = this.trs.get(rid);
      if (tr === undefined) continue;
      this.trs.delete(rid);
      tr.className = "del";
      setTimeout(() => tr.remove(), FLASH_MS);
    }
  }

  private row(rid: RowId, row: Row): HTMLTableRowElement {
    const tr = document.createElement("tr");
    tr.dataset["rowId"] = String(rid);
    tr.append(...row.map(cell));
    this.trs.set(rid, tr);
    return tr;
  }

  private flash(tr: HTMLTableRowElement, cls: "ins" | "upd"): void {
    tr.className = cls;
    const stamp = String(performance.now());
    tr.dataset["flash"] = stamp;
    setTimeout(() => {
      if (tr.dataset["flash"] === stamp) tr.className = "";
    }, FLASH_MS);
  }
}
