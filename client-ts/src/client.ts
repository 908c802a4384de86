/** {@link Client}: the entry point — queries, transactions, subscriptions and live queries. */

import { DEFAULT_BACKOFF, type Backoff } from "./backoff.js";
import { Connection, type ConnectionState, type StateListener, type WebSocketConstructor } from "./connection.js";
import { abortReason, VerdigrisError } from "./errors.js";
import { Http } from "./http.js";
import { LiveQuery } from "./live.js";
import { Nodes } from "./nodes.js";
import { objectRow, type RowMapper, type RowObject } from "./rows.js";
import { Subscription, type SubscribeOptions } from "./subscription.js";
import {
  statementParts,
  toStatement,
  type ExecResponse,
  type Params,
  type RowId,
  type ServerMessage,
  type SqliteValue,
  type Statement,
} from "./types.js";

export interface ClientOptions {
  /** Node URLs (`http://host:port`) or `host:port`; the client fails over in order. */
  nodes: string | readonly string[];
  /** The node's `api.authz.bearer-token`. */
  token?: string;
  /**
   * The WebSocket class, for runtimes without a global one (Node 20: `import WebSocket from "ws"`).
   * Defaults to `globalThis.WebSocket`.
   */
  WebSocket?: WebSocketConstructor;
  /** `fetch` for HTTP requests; defaults to `globalThis.fetch`. */
  fetch?: typeof fetch;
  /** Reconnection policy (default: 100 ms doubling to 10 s, full jitter, forever). */
  backoff?: Partial<Backoff>;
  /** Application-level ping interval on the WebSocket (default 15 s). */
  pingIntervalMs?: number;
  /** A socket on which nothing arrived this long is replaced (default 45 s). */
  idleTimeoutMs?: number;
  /** Time limit of one HTTP request (default 60 s). */
  requestTimeoutMs?: number;
  /** HTTP attempts across the nodes before giving up (default: two rounds, at least 3). */
  requestAttempts?: number;
}

/** Where `query` and `transaction` go: the shared WebSocket or one HTTP request. */
export type Transport = "websocket" | "http";

export interface RequestOptions {
  signal?: AbortSignal;
  /** Seconds; 0 disables the node's default timeout. */
  timeout?: number;
  /** Default: `websocket` when a WebSocket class is available, else `http`. */
  transport?: Transport;
}

export interface QueryOptions<Row> extends RequestOptions {
  mapRow?: RowMapper<Row>;
}

/** A query's result. */
export interface QueryResult<Row> {
  columns: string[];
  rows: Row[];
  /** Each row's id (1, 2, 3… in result order). */
  rowIds: RowId[];
  /** Seconds the node spent running the query. */
  time: number;
}

/**
 * A client of one or more Verdigris nodes.
 *
 * ```ts
 * import { Client } from "verdigris-client";
 * const client = new Client({ nodes: ["http://10.0.0.1:8080", "http://10.0.0.2:8080"] });
 * await client.transaction([["INSERT INTO todos (id, title) VALUES (?, ?)", [1, "ship"]]]);
 * const { rows } = await client.query<{ id: number; title: string }>("SELECT id, title FROM todos");
 * ```
 *
 * Subscriptions, queries and transactions share one WebSocket, opened on first use; `close()`
 * ends it.
 */
export class Client {
  private readonly nodes: Nodes;
  private readonly conn: Connection | null;
  private readonly http: Http | null;
  private readonly backoff: Backoff;

  constructor(opts: ClientOptions) {
    this.nodes = new Nodes(opts.nodes);
    this.backoff = { ...DEFAULT_BACKOFF, ...opts.backoff };
    const WS = opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    const f = opts.fetch ?? (typeof fetch === "function" ? fetch.bind(globalThis) : undefined);
    if (opts.token !== undefined && (opts.token === "" || /[\r\n]/.test(opts.token))) {
      throw new VerdigrisError("config", "the bearer token must be non-empty and on one line");
    }
    const token = opts.token === undefined ? {} : { token: opts.token };
    this.conn =
      WS === undefined
        ? null
        : new Connection({
            nodes: this.nodes,
            WebSocket: WS,
            ...token,
            backoff: this.backoff,
            pingIntervalMs: opts.pingIntervalMs ?? 15_000,
            idleTimeoutMs: opts.idleTimeoutMs ?? 45_000,
            ...(f ? { fetch: f } : {}),
          });
    this.http =
      f === undefined
        ? null
        : new Http({
            nodes: this.nodes,
            fetch: f,
            ...token,
            backoff: this.backoff,
            attempts: opts.requestAttempts ?? Math.max(3, 2 * this.nodes.urls.length),
            requestTimeoutMs: opts.requestTimeoutMs ?? 60_000,
          });
  }

  /** The node URLs, normalized. */
  get urls(): readonly string[] {
    return this.nodes.urls;
  }

  /** The WebSocket's state (`idle` when there is no WebSocket class). */
  get state(): ConnectionState {
    return this.conn?.state ?? "idle";
  }

  /** Calls `listener` on every change of the WebSocket's state; returns an unsubscribe function. */
  onStateChange(listener: StateListener): () => void {
    return this.conn?.onState(listener) ?? (() => undefined);
  }

  private ws(): Connection {
    if (this.conn === null) {
      throw new VerdigrisError(
        "config",
        "no WebSocket implementation: pass the `WebSocket` option (in Node 20, `import WebSocket from \"ws\"`)",
      );
    }
    return this.conn;
  }

  private transport(t: Transport | undefined): Transport {
    if (t !== undefined) return t;
    return this.conn !== null ? "websocket" : "http";
  }

  /** Runs one read-only statement and returns every row. */
  async query<Row = RowObject>(sql: string, params?: Params, opts: QueryOptions<Row> = {}): Promise<QueryResult<Row>> {
    const stmt = toStatement(sql, params);
    const map = opts.mapRow ?? (objectRow as RowMapper<Row>);
    if (opts.signal?.aborted) throw abortReason(opts.signal);
    const raw =
      this.transport(opts.transport) === "http"
        ? await this.httpClient().query(stmt, opts)
        : await this.wsQuery(stmt, opts);
    return {
      columns: raw.columns,
      rows: raw.rows.map(([, cells]) => map(cells, raw.columns)),
      rowIds: raw.rows.map(([id]) => id),
      time: raw.time,
    };
  }

  /** Runs statements as one atomic transaction. */
  async transaction(statements: Statement[], opts: RequestOptions = {}): Promise<ExecResponse> {
    if (opts.signal?.aborted) throw abortReason(opts.signal);
    if (this.transport(opts.transport) === "http") return this.httpClient().transaction(statements, opts);
    const m = await this.wsRequest("t", (id) => ({
      type: "transaction",
      id,
      statements,
      ...(opts.timeout !== undefined ? { timeout: opts.timeout } : {}),
    }), opts.signal);
    return m.transaction!;
  }

  /** Subscribes to a query: its rows, then its changes, resumed across reconnections. */
  subscribe<Row = RowObject>(sql: string, params?: Params, opts: SubscribeOptions<Row> = {}): Subscription<Row> {
    const conn = this.ws();
    return new Subscription<Row>(
      { conn, backoff: this.backoff, nodeUrl: (i) => this.nodes.get(i) },
      toStatement(sql, params),
      { ...opts, mapRow: opts.mapRow ?? (objectRow as RowMapper<Row>) },
    );
  }

  /** Subscribes to a query and keeps its current rows in a `Map`. */
  liveQuery<Row = RowObject>(sql: string, params?: Params, opts: SubscribeOptions<Row> = {}): LiveQuery<Row> {
    return new LiveQuery(this.subscribe<Row>(sql, params, opts));
  }

  /** Closes the WebSocket: subscriptions end, pending requests fail with a `closed` error. */
  close(): void {
    this.conn?.close();
  }

  private httpClient(): Http {
    if (this.http === null) throw new VerdigrisError("config", "no fetch implementation: pass the `fetch` option");
    return this.http;
  }

  private wsQuery(stmt: Statement, opts: RequestOptions): Promise<{ columns: string[]; rows: [RowId, SqliteValue[]][]; time: number }> {
    const conn = this.ws();
    const id = conn.nextId("q");
    const out = { columns: [] as string[], rows: [] as [RowId, SqliteValue[]][], time: 0 };
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        conn.remove(id);
        reject(abortReason(opts.signal!));
      };
      opts.signal?.addEventListener("abort", onAbort, { once: true });
      const done = () => opts.signal?.removeEventListener("abort", onAbort);
      conn.add(id, {
        kind: "query",
        message: () => ({
          type: "query",
          id,
          ...statementParts(stmt),
          ...(opts.timeout !== undefined ? { timeout: opts.timeout } : {}),
        }),
        deliver: (m) => {
          if (m.columns) out.columns = m.columns;
          else if (m.row) out.rows.push(m.row);
          else if (m.eoq) {
            out.time = m.eoq.time;
            done();
            resolve(out);
          } else if (m.error !== undefined) {
            done();
            reject(serverError(m));
          }
        },
        end: (r) => {
          done();
          reject(r.error);
        },
      });
    });
  }

  private wsRequest(prefix: string, build: (id: string) => import("./types.js").ClientMessage, signal?: AbortSignal): Promise<ServerMessage> {
    const conn = this.ws();
    const id = conn.nextId(prefix);
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        conn.remove(id);
        reject(abortReason(signal!));
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      const done = () => signal?.removeEventListener("abort", onAbort);
      conn.add(id, {
        kind: "request",
        message: () => build(id),
        deliver: (m) => {
          done();
          if (m.error !== undefined) reject(serverError(m));
          else resolve(m);
        },
        end: (r) => {
          done();
          reject(r.error);
        },
      });
    });
  }

  /** Checks the connection end to end: resolves with the round-trip time in ms. */
  async ping(signal?: AbortSignal): Promise<number> {
    const t0 = performance.now();
    await this.wsRequest("p", (id) => ({ type: "ping", id }), signal);
    return performance.now() - t0;
  }
}

function serverError(m: ServerMessage): VerdigrisError {
  return new VerdigrisError("server", m.error ?? "error", m.code ? { code: m.code } : {});
}
