/**
 * The wire types of Verdigris' HTTP and WebSocket APIs, as in `api-types/src/ws.rs` and
 * `docs/websocket.md`.
 */

/** A result cell: NULL, INTEGER (`bigint` beyond ±(2^53 − 1)), REAL, TEXT, or BLOB bytes. */
export type SqliteValue = null | number | bigint | string | number[];

/**
 * A statement parameter: `null`, booleans (1/0), integers (`number` or `bigint`) and other
 * numbers, strings, BLOBs (`Uint8Array` or an array of bytes).
 */
export type Param = null | boolean | number | bigint | string | Uint8Array | number[];

/** Positional (`?`, `?1`) or named (`:name`, `@name`, `$name`, keys with their prefix). */
export type Params = readonly Param[] | Readonly<Record<string, Param>>;

/** A statement in any of the API's four forms. */
export type Statement =
  | string
  | [string, readonly Param[]]
  | [string, Readonly<Record<string, Param>>]
  | { query: string; params?: readonly Param[]; named_params?: Readonly<Record<string, Param>> };

/** A row's stable id within one query result or subscription. */
export type RowId = number;
/** A subscription's change id: contiguous, starting at 1, per subscription and node. */
export type ChangeId = number;

export type ChangeType = "insert" | "update" | "delete";

/** Why the node sent an `error` (docs/websocket.md, "Error codes"). */
export type ErrorCode =
  | "bad_request"
  | "duplicate_id"
  | "not_found"
  | "too_old"
  | "too_slow"
  | "timeout"
  | "limit"
  | "internal"
  | "shutdown";

/** One statement's outcome in a transaction response. */
export interface StatementResult {
  rows_affected?: number;
  time?: number;
  error?: string;
}

/** The answer to a transaction (`POST /v1/transactions` or a WebSocket `transaction`). */
export interface ExecResponse {
  results: StatementResult[];
  time: number;
  /** The node's new version, or `null` when nothing replicated changed. */
  version: number | null;
  actor_id: string;
}

/** A message to the node. */
export type ClientMessage =
  | {
      type: "subscribe";
      id: string;
      sql?: string;
      params?: readonly Param[];
      named_params?: Readonly<Record<string, Param>>;
      query_id?: string;
      from?: ChangeId;
      skip_rows?: boolean;
    }
  | { type: "unsubscribe"; id: string }
  | {
      type: "query";
      id: string;
      sql: string;
      params?: readonly Param[];
      named_params?: Readonly<Record<string, Param>>;
      timeout?: number;
    }
  | { type: "transaction"; id: string; statements: Statement[]; timeout?: number }
  | { type: "ping"; id: string };

/** A message from the node: the `id` it answers plus one payload field. */
export interface ServerMessage {
  id?: string;
  columns?: string[];
  row?: [RowId, SqliteValue[]];
  eoq?: { time: number; change_id?: ChangeId };
  change?: [ChangeType, RowId, SqliteValue[], ChangeId];
  error?: string;
  transaction?: ExecResponse;
  unsubscribed?: Record<string, never>;
  pong?: Record<string, never>;
  code?: ErrorCode;
  last_change_id?: ChangeId;
  query_id?: string;
  hash?: string;
}

/** Splits a statement into a message's `sql`, `params` and `named_params`. */
export function statementParts(s: Statement): {
  sql: string;
  params?: readonly Param[];
  named_params?: Readonly<Record<string, Param>>;
} {
  if (typeof s === "string") return { sql: s };
  if (Array.isArray(s)) {
    const [sql, p] = s as [string, Params];
    return isPositional(p) ? { sql, params: p } : { sql, named_params: p };
  }
  const o = s as Exclude<Statement, string | unknown[]>;
  const out: ReturnType<typeof statementParts> = { sql: o.query };
  if (o.params !== undefined) out.params = o.params;
  if (o.named_params !== undefined) out.named_params = o.named_params;
  return out;
}

/** Builds a statement from SQL and optional parameters. */
export function toStatement(sql: string, params?: Params): Statement {
  if (params === undefined) return sql;
  return isPositional(params) ? [sql, params] : [sql, params];
}

function isPositional(p: Params): p is readonly Param[] {
  return Array.isArray(p);
}
