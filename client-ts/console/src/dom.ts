/** Small DOM helpers for the console (no framework). */

import type { SqliteValue } from "../../src/index.js";

/** The element with this id (the page's fixed skeleton, index.html). */
export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (e === null) throw new Error(`the page has no #${id}`);
  return e as T;
}

/** A new element with text or child nodes, and a class. */
export function el(tag: string, content: string | Node[] = "", cls?: string): HTMLElement {
  const e = document.createElement(tag);
  if (typeof content === "string") e.textContent = content;
  else e.append(...content);
  if (cls) e.className = cls;
  return e;
}

/** A table cell showing a SQLite value. */
export function cell(v: SqliteValue): HTMLTableCellElement {
  const td = document.createElement("td");
  setCell(td, v);
  return td;
}

export function setCell(td: HTMLTableCellElement, v: SqliteValue): void {
  if (v === null) {
    td.textContent = "NULL";
    td.className = "muted";
  } else if (Array.isArray(v)) {
    td.textContent = `x'${v.map((b) => b.toString(16).padStart(2, "0")).join("")}'`;
    td.className = "";
  } else {
    td.textContent = String(v);
    td.className = typeof v === "number" || typeof v === "bigint" ? "num" : "";
  }
}

/** Replaces a table body's rows. */
export function fillBody(table: HTMLTableElement, rows: HTMLTableRowElement[]): void {
  table.tBodies[0]!.replaceChildren(...rows);
}

export function tr(cells: (string | number | HTMLTableCellElement)[]): HTMLTableRowElement {
  const r = document.createElement("tr");
  for (const c of cells) {
    if (c instanceof HTMLTableCellElement) r.append(c);
    else {
      const td = document.createElement("td");
      td.textContent = String(c);
      if (typeof c === "number") td.className = "num";
      r.append(td);
    }
  }
  return r;
}

/** "3.2 s ago", "now", "—". */
export function ago(secs: number | null | undefined): string {
  if (secs === null || secs === undefined) return "—";
  if (secs < 1.5) return "now";
  if (secs < 120) return `${secs.toFixed(0)} s ago`;
  if (secs < 7200) return `${(secs / 60).toFixed(0)} min ago`;
  return `${(secs / 3600).toFixed(1)} h ago`;
}
