/**
 * Queries and transactions over plain HTTP (`POST /v1/queries`, `POST /v1/transactions`) with
 * `fetch`, failing over across nodes. A query is retried on another node after a network
 * error or a 5xx; a transaction only when it cannot have run (503 over the concurrency limit,
 * or a refused connection), so a write is never applied twice.
 */

import { backoffDelay, type Backoff } from "./backoff.js";
import { abortReason, VerdigrisError } from "./errors.js";
import { parseJson, stringifyJson } from "./json.js";
import type { Nodes } from "./nodes.js";
import type { ExecResponse, SqliteValue, Statement } from "./types.js";

export interface HttpOptions {
  nodes: Nodes;
  fetch: typeof fetch;
  token?: string;
  backoff: Backoff;
  /** Attempts across the nodes before giving up. */
  attempts: number;
  /** Time limit (ms) for each attempt's whole answer. */
  requestTimeoutMs: number;
}

/** A query's raw result. */
export interface RawResult {
  columns: string[];
  rows: [number, SqliteValue[]][];
  /** Seconds the node spent running the query. */
  time: number;
}

/** Connection errors known to have happened before the request was sent. */
const REFUSED = new WeakSet<VerdigrisError>();

type Attempt<T> = (base: string, signal: AbortSignal) => Promise<T>;

export class Http {
  constructor(private readonly o: HttpOptions) {}

  private headers(): Record<string, string> {
    const h: Record<string, string> = { "content-type": "application/json" };
    if (this.o.token !== undefined) h["authorization"] = `Bearer ${this.o.token}`;
    return h;
  }

  /** Runs `attempt` on the current node, moving on per `retry` with backoff between tries. */
  private async withFailover<T>(
    attempt: Attempt<T>,
    retry: (e: VerdigrisError) => boolean,
    signal: AbortSignal | undefined,
  ): Promise<T> {
    let last: VerdigrisError | null = null;
    for (let i = 0; i < this.o.attempts; i++) {
      if (signal?.aborted) throw abortReason(signal);
      if (i > 0) await sleep(backoffDelay(this.o.backoff, i - 1), signal);
      const [idx, base] = this.o.nodes.current();
      const timeout = AbortSignal.timeout(this.o.requestTimeoutMs);
      const sig = signal ? AbortSignal.any([signal, timeout]) : timeout;
      try {
        return await attempt(base, sig);
      } catch (e) {
        if (signal?.aborted) throw abortReason(signal);
        const err = asError(e, base, timeout.aborted);
        if (!retry(err)) throw err;
        last = err;
        this.o.nodes.advance(idx);
      }
    }
    throw new VerdigrisError("exhausted", `gave up after ${this.o.attempts} attempts: ${last?.message}`, { cause: last });
  }

  private async post(base: string, path: string, body: unknown, signal: AbortSignal): Promise<Response> {
    let r: Response;
    try {
      r = await this.o.fetch(`${base}${path}`, { method: "POST", headers: this.headers(), body: stringifyJson(body), signal });
    } catch (e) {
      if (signal.aborted) throw e;
      const refused = (e as { cause?: { code?: string } }).cause?.code === "ECONNREFUSED";
      const err = new VerdigrisError("connect", `cannot reach ${base}: ${describe(e)}`, { node: base, cause: e });
      if (refused) REFUSED.add(err);
      throw err;
    }
    if (!r.ok) throw await httpError(base, r);
    return r;
  }

  /** Runs a read-only query; retried on another node after a network error or a 5xx. */
  query(stmt: Statement, opts: { signal?: AbortSignal; timeout?: number }): Promise<RawResult> {
    const q = opts.timeout === undefined ? "" : `?timeout=${opts.timeout}`;
    return this.withFailover(
      async (base, signal) => {
        const r = await this.post(base, `/v1/queries${q}`, stmt, signal);
        return parseNdjson(base, await r.text());
      },
      (e) => e.retryable,
      opts.signal,
    );
  }

  /** Runs statements as one transaction; retried only when it cannot have run. */
  transaction(statements: Statement[], opts: { signal?: AbortSignal; timeout?: number }): Promise<ExecResponse> {
    const q = opts.timeout === undefined ? "" : `?timeout=${opts.timeout}`;
    return this.withFailover(
      async (base, signal) => {
        const r = await this.post(base, `/v1/transactions${q}`, statements, signal);
        return parseJson(await r.text()) as ExecResponse;
      },
      // Not run for sure: over the concurrency limit, or the connection was refused.
      (e) => e.status === 503 || REFUSED.has(e),
      opts.signal,
    );
  }
}

function parseNdjson(base: string, text: string): RawResult {
  const out: RawResult = { columns: [], rows: [], time: 0 };
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    const ev = parseJson(line) as { columns?: string[]; row?: [number, SqliteValue[]]; eoq?: { time: number }; error?: string };
    if (ev.columns) out.columns = ev.columns;
    else if (ev.row) out.rows.push(ev.row);
    else if (ev.eoq) {
      out.time = ev.eoq.time;
      return out;
    } else if (ev.error !== undefined) throw new VerdigrisError("server", ev.error, { node: base });
  }
  throw new VerdigrisError("connection_lost", `the query's answer from ${base} ended before its end-of-query`, { node: base });
}

async function httpError(base: string, r: Response): Promise<VerdigrisError> {
  let msg = r.statusText;
  try {
    const body = JSON.parse(await r.text()) as { error?: unknown };
    if (typeof body.error === "string") msg = body.error;
  } catch {
    // Not JSON: keep the status text.
  }
  const kind = r.status === 401 ? "unauthorized" : "server";
  return new VerdigrisError(kind, `${base} answered ${r.status}: ${msg}`, { status: r.status, node: base });
}

function asError(e: unknown, base: string, timedOut: boolean): VerdigrisError {
  if (e instanceof VerdigrisError) return e;
  if (timedOut) return new VerdigrisError("timeout", `${base} did not answer in time`, { node: base, cause: e });
  return new VerdigrisError("connection_lost", `the request to ${base} failed: ${describe(e)}`, { node: base, cause: e });
}

function describe(e: unknown): string {
  const cause = (e as { cause?: { message?: string } }).cause?.message;
  return cause ? `${String(e)} (${cause})` : String(e);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(abortReason(signal!));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
