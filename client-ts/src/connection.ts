/**
 * The client's one WebSocket (`GET /v1/ws`, see docs/websocket.md): opened when there is work,
 * kept alive with pings, reconnected with backoff and jitter (failing over to the next node),
 * and multiplexing every subscription, query and transaction by client-chosen ids — the
 * JavaScript twin of `client-rs/src/ws/`.
 *
 * Each request registers a {@link Route}: the connection asks it for its message when a
 * socket is up (so a subscription can resume on the node it knows), hands it the node's
 * messages for its id, and tells it when the socket it was sent on is gone.
 */

import { backoffDelay, backoffExhausted, type Backoff } from "./backoff.js";
import { VerdigrisError } from "./errors.js";
import { parseJson, stringifyJson } from "./json.js";
import { wsUrl, type Nodes } from "./nodes.js";
import type { ClientMessage, ServerMessage } from "./types.js";

/** What the client needs of a WebSocket: the browser's, Node ≥ 22's, or the `ws` package's. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/**
 * A WebSocket class: `new WebSocket(url, protocols)` returning a {@link WebSocketLike}. Typed
 * loosely (the browser's and the `ws` package's event types differ) and checked at run time.
 */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => object;

/** The connection's state, reported to {@link Connection.onState} listeners. */
export type ConnectionState =
  /** No socket: nothing to do yet (sockets open on demand). */
  | "idle"
  /** Opening a socket (the first, or after a failure: see `attempt`). */
  | "connecting"
  | "open"
  /** The socket was lost or could not be opened; waiting `retryInMs` before the next try. */
  | "reconnecting"
  /** Closed by {@link Connection.close}. */
  | "closed";

export interface StateInfo {
  /** The node (base URL) concerned. */
  node: string;
  /** Consecutive failed attempts. */
  attempt: number;
  retryInMs?: number;
  error?: VerdigrisError;
}

export type StateListener = (state: ConnectionState, info: StateInfo) => void;

/** How a route ended without a terminal message from the node. */
export type RouteEnd =
  /** The socket it was sent on is gone (a subscription resumes; a request's outcome is unknown). */
  | { kind: "disconnected"; error: VerdigrisError }
  /** It cannot be served (no node reachable, wrong token, client closed). */
  | { kind: "failed"; error: VerdigrisError };

export interface Route {
  /** `sub` routes end on `error`/`unsubscribed`, `query` routes on `eoq`/`error`, `request` on any reply. */
  readonly kind: "sub" | "query" | "request";
  /** The message to send on a socket to node `node` (index). */
  message(node: number): ClientMessage;
  /** A message from the node for this route's id. */
  deliver(msg: ServerMessage): void;
  /** The route ended otherwise; it is already removed. */
  end(reason: RouteEnd): void;
}

export interface ConnectionOptions {
  nodes: Nodes;
  WebSocket: WebSocketConstructor;
  token?: string;
  backoff: Backoff;
  pingIntervalMs: number;
  idleTimeoutMs: number;
  /** Used to find out why a handshake failed (browsers do not expose the HTTP status). */
  fetch?: typeof fetch;
}

const OPEN = 1;

function terminal(kind: Route["kind"], m: ServerMessage): boolean {
  if (m.error !== undefined) return true;
  if (kind === "sub") return m.unsubscribed !== undefined;
  if (kind === "query") return m.eoq !== undefined;
  return m.transaction !== undefined || m.pong !== undefined;
}

export class Connection {
  private readonly routes = new Map<string, { route: Route; sent: boolean }>();
  private readonly listeners = new Set<StateListener>();
  private ws: WebSocketLike | null = null;
  private wsNode = 0;
  private st: ConnectionState = "idle";
  private failures = 0;
  private ids = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  private lastRx = 0;
  private received = false;

  constructor(private readonly opts: ConnectionOptions) {}

  get state(): ConnectionState {
    return this.st;
  }

  /** A new id, never used before on this client. */
  nextId(prefix: string): string {
    return `${prefix}${++this.ids}`;
  }

  onState(l: StateListener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  private setState(st: ConnectionState, info: Omit<StateInfo, "node" | "attempt"> = {}): void {
    this.st = st;
    const full: StateInfo = { node: this.opts.nodes.get(this.wsNode), attempt: this.failures, ...info };
    for (const l of [...this.listeners]) {
      try {
        l(st, full);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  /** Registers a route: sent now if a socket is open, else when one is. */
  add(id: string, route: Route): void {
    if (this.st === "closed") {
      route.end({ kind: "failed", error: new VerdigrisError("closed", "the client is closed") });
      return;
    }
    this.routes.set(id, { route, sent: false });
    if (this.ws !== null && this.ws.readyState === OPEN && this.st === "open") this.send(id);
    else if (this.st === "idle") this.connect();
  }

  /** Forgets a route; a subscription sent on the open socket is unsubscribed there. */
  remove(id: string): void {
    const r = this.routes.get(id);
    if (r === undefined) return;
    this.routes.delete(id);
    if (r.sent && r.route.kind === "sub" && this.st === "open") {
      this.write({ type: "unsubscribe", id });
    }
  }

  /** Closes the socket for good; every route fails with a `closed` error. */
  close(): void {
    if (this.st === "closed") return;
    this.stopTimers();
    const ws = this.ws;
    this.ws = null;
    if (ws !== null) {
      detach(ws);
      try {
        ws.close(1000, "client closed");
      } catch {
        // Already closing.
      }
    }
    this.failAll(new VerdigrisError("closed", "the client is closed"));
    this.setState("closed");
  }

  private send(id: string): void {
    const r = this.routes.get(id);
    if (r === undefined || r.sent) return;
    r.sent = true;
    this.write(r.route.message(this.wsNode));
  }

  private write(m: ClientMessage): void {
    try {
      this.ws?.send(stringifyJson(m));
    } catch {
      // The socket is closing: its close handler ends the route.
    }
  }

  private connect(): void {
    const [node, base] = this.opts.nodes.current();
    this.wsNode = node;
    this.setState("connecting");
    const protocols = ["verdigris.v1"];
    let url = wsUrl(base);
    const token = this.opts.token;
    if (token !== undefined) {
      // Browsers cannot set headers on a WebSocket: the token rides as a subprotocol entry,
      // or in the URL when it is not a valid subprotocol token.
      if (/^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/.test(token)) protocols.push(`verdigris.bearer.${token}`);
      else url += `?token=${encodeURIComponent(token)}`;
    }
    let ws: WebSocketLike;
    try {
      ws = new this.opts.WebSocket(url, protocols) as WebSocketLike;
      if (typeof ws.send !== "function" || typeof ws.close !== "function") {
        throw new TypeError("the WebSocket option does not construct WebSocket objects");
      }
    } catch (e) {
      this.failAll(new VerdigrisError("config", `cannot open a WebSocket to ${url}: ${String(e)}`, { cause: e }));
      this.setState("idle");
      return;
    }
    this.ws = ws;
    let opened = false;
    let handshakeError: unknown;
    ws.onopen = () => {
      opened = true;
      this.received = false;
      this.lastRx = Date.now();
      this.setState("open");
      this.startPings();
      for (const id of [...this.routes.keys()]) this.send(id);
    };
    ws.onmessage = (ev) => {
      this.lastRx = Date.now();
      this.received = true;
      this.dispatch(ev.data);
    };
    ws.onerror = (ev) => {
      handshakeError ??= ev;
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.stopTimers();
      if (opened) this.lost(ev.code, ev.reason);
      else void this.handshakeFailed(node, base, handshakeError);
    };
  }

  private dispatch(data: unknown): void {
    let msg: ServerMessage;
    try {
      const text = typeof data === "string" ? data : new TextDecoder().decode(data as ArrayBuffer);
      msg = parseJson(text) as ServerMessage;
    } catch {
      return; // Not ours to fix: the node only sends JSON text frames.
    }
    if (msg === null || typeof msg !== "object" || msg.id === undefined) return;
    const r = this.routes.get(msg.id);
    if (r === undefined || !r.sent) return;
    if (terminal(r.route.kind, msg)) this.routes.delete(msg.id);
    r.route.deliver(msg);
  }

  private startPings(): void {
    const every = this.opts.pingIntervalMs;
    this.pingTimer = setInterval(() => {
      if (Date.now() - this.lastRx >= this.opts.idleTimeoutMs) {
        // Silent for too long: the node or the path to it is gone.
        const ws = this.ws;
        this.ws = null;
        if (ws !== null) {
          detach(ws);
          try {
            ws.close(4000, "idle");
          } catch {
            // Already closing.
          }
        }
        this.stopTimers();
        this.lost(4000, `nothing received for ${this.opts.idleTimeoutMs} ms`);
        return;
      }
      this.write({ type: "ping", id: this.nextId("p") });
    }, every);
    unref(this.pingTimer);
  }

  private stopTimers(): void {
    if (this.pingTimer !== null) clearInterval(this.pingTimer);
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.pingTimer = null;
    this.retryTimer = null;
  }

  /** An open socket closed: sent routes end (subscriptions resume), then reconnect. */
  private lost(code: number, reason: string): void {
    const node = this.opts.nodes.get(this.wsNode);
    const error = new VerdigrisError(
      "connection_lost",
      `the WebSocket to ${node} closed (${code}${reason ? ` ${reason}` : ""})`,
      { node },
    );
    for (const [id, r] of [...this.routes]) {
      if (!r.sent) continue;
      this.routes.delete(id);
      r.route.end({ kind: "disconnected", error });
    }
    this.failures = this.received ? 0 : this.failures + 1;
    this.retry(this.received ? 0 : this.failures - 1, error);
  }

  private async handshakeFailed(node: number, base: string, ev: unknown): Promise<void> {
    const status = (await this.diagnose(base, ev)) ?? 0;
    if (this.st === "closed") return;
    if (status === 401 || status === 400 || status === 405 || status === 426) {
      const error =
        status === 401
          ? new VerdigrisError("unauthorized", `${base} refused the bearer token (401): set the right token`, { status, node: base })
          : new VerdigrisError("server", `${base} refused the WebSocket upgrade (${status})`, { status, node: base });
      this.failures = 0;
      this.failAll(error);
      this.setState("idle", { error });
      return;
    }
    const error = new VerdigrisError(
      "connect",
      `cannot open a WebSocket to ${base}${status ? ` (HTTP ${status})` : ""}`,
      { node: base, ...(status ? { status } : {}) },
    );
    this.failures++;
    this.opts.nodes.advance(node);
    if (backoffExhausted(this.opts.backoff, this.failures)) {
      const attempts = this.failures;
      this.failures = 0;
      const ex = new VerdigrisError("exhausted", `gave up after ${attempts} attempts: ${error.message}`, { cause: error });
      this.failAll(ex);
      this.setState("idle", { error: ex });
      return;
    }
    this.retry(this.failures - 1, error);
  }

  /** The HTTP status behind a failed handshake: from the `ws` package's error, or by asking. */
  private async diagnose(base: string, ev: unknown): Promise<number | undefined> {
    const text = String((ev as { message?: unknown } | undefined)?.message ?? "");
    const m = /Unexpected server response: (\d{3})/.exec(text);
    if (m) return Number(m[1]);
    const f = this.opts.fetch;
    if (f === undefined) return undefined;
    try {
      const headers: Record<string, string> = {};
      if (this.opts.token !== undefined) headers["authorization"] = `Bearer ${this.opts.token}`;
      const r = await f(`${base}/v1/health`, { headers, signal: AbortSignal.timeout(5000) });
      return r.status === 401 ? 401 : undefined;
    } catch {
      return undefined;
    }
  }

  private retry(attempt: number, error: VerdigrisError): void {
    if (this.st === "closed") return;
    // Subscriptions whose socket was lost re-register in a moment: wait for them.
    const delay = backoffDelay(this.opts.backoff, attempt);
    this.setState("reconnecting", { retryInMs: Math.round(delay), error });
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.st === "closed") return;
      if (this.routes.size === 0) this.setState("idle");
      else this.connect();
    }, delay);
  }

  private failAll(error: VerdigrisError): void {
    const all = [...this.routes.values()];
    this.routes.clear();
    for (const r of all) r.route.end({ kind: "failed", error });
  }
}

function detach(ws: WebSocketLike): void {
  ws.onopen = null;
  ws.onmessage = null;
  ws.onclose = null;
  ws.onerror = null;
}

/** Lets Node exit while only keep-alive timers are pending. */
function unref(t: unknown): void {
  (t as { unref?: () => void }).unref?.();
}
