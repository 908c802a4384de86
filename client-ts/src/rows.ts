/** Turning result cells into typed rows. */

import type { SqliteValue } from "./types.js";

/** Builds a row from its cells and the result's column names. */
export type RowMapper<Row> = (cells: SqliteValue[], columns: readonly string[]) => Row;

/** The default row type: column name → cell. */
export type RowObject = Record<string, SqliteValue>;

/**
 * The default mapper: an object with one field per column (when two columns share a name, the
 * later one wins: alias them in SQL, `SELECT a.id AS a_id, b.id AS b_id`).
 */
export function objectRow<Row = RowObject>(cells: SqliteValue[], columns: readonly string[]): Row {
  const o: Record<string, SqliteValue> = {};
  for (let i = 0; i < cells.length; i++) o[columns[i] ?? `column${i + 1}`] = cells[i]!;
  return o as Row;
}

/** A mapper that keeps the cells as they are (`Row = SqliteValue[]`). */
export function arrayRow(cells: SqliteValue[]): SqliteValue[] {
  return cells;
}
