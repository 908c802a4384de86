/**
 * `verdigris-client`: a TypeScript client for Verdigris nodes — queries, transactions and
 * live subscriptions over one multiplexed WebSocket (`GET /v1/ws`), or over HTTP. Works in
 * browsers and in Node ≥ 20 (pass `WebSocket` from the `ws` package where there is no global
 * one). No runtime dependencies. See README.md.
 */

export { Client } from "./client.js";
export type { ClientOptions, QueryOptions, QueryResult, RequestOptions, Transport } from "./client.js";
export type { ConnectionState, StateInfo, StateListener, WebSocketConstructor, WebSocketLike } from "./connection.js";
export { Subscription } from "./subscription.js";
export type { SubscribeOptions, EventListener, ErrorListener } from "./subscription.js";
export { LiveQuery, LiveState } from "./live.js";
export type { LiveUpdate, UpdateListener } from "./live.js";
export type { ResetReason, SubscriptionEvent } from "./machine.js";
export { VerdigrisError } from "./errors.js";
export type { ErrorKind } from "./errors.js";
export { DEFAULT_BACKOFF, backoffCap, backoffDelay } from "./backoff.js";
export type { Backoff, Jitter } from "./backoff.js";
export { objectRow, arrayRow } from "./rows.js";
export type { RowMapper, RowObject } from "./rows.js";
export { parseJson, stringifyJson } from "./json.js";
export type {
  ChangeId,
  ChangeType,
  ErrorCode,
  ExecResponse,
  Param,
  Params,
  RowId,
  SqliteValue,
  Statement,
  StatementResult,
} from "./types.js";
