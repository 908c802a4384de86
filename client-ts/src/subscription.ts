/**
 * {@link Subscription}: a resumable stream of typed subscription events over the client's
 * WebSocket, read as an async iterator or through callbacks. The driver opens sessions as the
 * state machine ({@link Machine}) plans them, with backoff, and feeds it each session's events.
 */

import { backoffDelay, backoffExhausted, type Backoff } from "./backoff.js";
import type { Connection, RouteEnd } from "./connection.js";
import { abortReason, VerdigrisError } from "./errors.js";
import { Machine, type NodeEvent, type Step, type SubscriptionEvent } from "./machine.js";
import type { RowMapper } from "./rows.js";
import { statementParts, type ChangeId, type ClientMessage, type ServerMessage, type Statement } from "./types.js";

export interface SubscribeOptions<Row> {
  /** Aborting ends the subscription (iteration finishes; nothing is thrown). */
  signal?: AbortSignal;
  /** No snapshot: only changes from now on. */
  skipRows?: boolean;
  /**
   * On a gap (a missed change id, changes the node no longer keeps, a failover) emit a `reset`
   * event and take a fresh snapshot (default). When false the subscription fails with a
   * `missed_change` error instead.
   */
  resnapshotOnGap?: boolean;
  /** Builds rows from cells (default: an object per row, keyed by column name). */
  mapRow?: RowMapper<Row>;
  /**
   * Changes the async iterator may hold unread (default 10,000). Past it the subscription
   * pauses on the node and resumes from its last change id once the reader catches up
   * (a fresh snapshot if the node no longer keeps those changes). Callbacks never pause it.
   */
  bufferSize?: number;
}

/** What the subscription needs of its client. */
export interface SubscriptionContext {
  conn: Connection;
  backoff: Backoff;
  nodeUrl(i: number): string;
}

export type EventListener<Row> = (ev: SubscriptionEvent<Row>) => void;
export type ErrorListener = (e: VerdigrisError) => void;

/**
 * A live query result as events: `columns`, `row`s, `eoq`, then `change`s as they happen.
 *
 * It survives disconnections: after a lost socket or a node going down, the client reconnects
 * with backoff (trying the nodes in turn) and resumes after the last change id; when that is
 * impossible it emits a `reset` and a fresh snapshot, never silently skips a change. It fails
 * (the iterator throws, `onError` listeners are called) on bad SQL, a wrong token, or retries
 * exhausted per the backoff policy.
 *
 * ```ts
 * for await (const ev of client.subscribe<Todo>("SELECT id, title FROM todos")) {
 *   if (ev.type === "change") console.log(ev.change, ev.row.title);
 * }
 * ```
 */
export class Subscription<Row> implements AsyncIterable<SubscriptionEvent<Row>> {
  private readonly machine: Machine;
  private readonly listeners = new Set<EventListener<Row>>();
  private readonly errorListeners = new Set<ErrorListener>();
  private readonly closeListeners = new Set<() => void>();
  private readonly queue: SubscriptionEvent<Row>[] = [];
  private queuedChanges = 0;
  private waiter: (() => void) | null = null;
  private iterating = false;
  private session: string | null = null;
  private healthy = false;
  private opened = false;
  private failures = 0;
  private lastFailure: VerdigrisError | null = null;
  private paused = false;
  private reopenTimer: ReturnType<typeof setTimeout> | null = null;
  private error: VerdigrisError | null = null;
  private done = false;
  private cols: string[] = [];
  private readonly bufferSize: number;
  private readonly mapRow: RowMapper<Row>;
  private readonly skipRows: boolean;
  /** @internal */
  readonly signal: AbortSignal | undefined;

  /** @internal Use `Client.subscribe`. */
  constructor(
    private readonly ctx: SubscriptionContext,
    private readonly stmt: Statement,
    opts: SubscribeOptions<Row> & { mapRow: RowMapper<Row> },
  ) {
    this.machine = new Machine(opts.skipRows ?? false, opts.resnapshotOnGap ?? true);
    this.bufferSize = Math.max(1, opts.bufferSize ?? 10_000);
    this.mapRow = opts.mapRow;
    this.skipRows = opts.skipRows ?? false;
    this.signal = opts.signal;
    const signal = opts.signal;
    if (signal?.aborted) {
      this.done = true;
      return;
    }
    signal?.addEventListener("abort", () => this.close(), { once: true });
    // Open on the next tick, so listeners attached right after subscribing see every event.
    queueMicrotask(() => this.open());
  }

  /** The node's id of the subscription, once known; it changes when the client re-subscribes. */
  get queryId(): string | null {
    return this.machine.queryId;
  }
  /** The hash of the subscription's normalized SQL, once known. */
  get queryHash(): string | null {
    return this.machine.hash;
  }
  /** The last change id received (snapshot end or change): where the subscription resumes. */
  get lastChangeId(): ChangeId | null {
    return this.machine.last;
  }
  /** The node (base URL) the subscription lives on, once known. */
  get node(): string | null {
    return this.machine.node === null ? null : this.ctx.nodeUrl(this.machine.node);
  }
  /** The result's column names, once the first snapshot began. */
  get columns(): readonly string[] {
    return this.cols;
  }
  /** Whether the subscription ended (closed, aborted or failed). */
  get closed(): boolean {
    return this.done;
  }

  /**
   * Calls `onEvent` for every event from now on, and `onError` if the subscription fails.
   * Returns a function that removes both listeners.
   */
  on(onEvent: EventListener<Row>, onError?: ErrorListener): () => void {
    this.listeners.add(onEvent);
    if (onError) this.errorListeners.add(onError);
    return () => {
      this.listeners.delete(onEvent);
      if (onError) this.errorListeners.delete(onError);
    };
  }

  /** Ends the subscription (the node keeps it for other listeners, then expires it). */
  close(): void {
    if (this.done) return;
    this.done = true;
    this.endSession();
    if (this.reopenTimer !== null) clearTimeout(this.reopenTimer);
    this.wake();
    this.notifyClosed();
  }

  /** Calls `f` once the subscription has ended (closed, aborted or failed). */
  onClose(f: () => void): () => void {
    if (this.done) queueMicrotask(f);
    else this.closeListeners.add(f);
    return () => this.closeListeners.delete(f);
  }

  private notifyClosed(): void {
    const ls = [...this.closeListeners];
    this.closeListeners.clear();
    for (const l of ls) l();
  }

  [Symbol.asyncIterator](): AsyncIterator<SubscriptionEvent<Row>> {
    this.iterating = true;
    return {
      next: () => this.next(),
      return: () => {
        this.close();
        return Promise.resolve({ done: true, value: undefined });
      },
    };
  }

  private async next(): Promise<IteratorResult<SubscriptionEvent<Row>>> {
    for (;;) {
      const ev = this.queue.shift();
      if (ev !== undefined) {
        if (ev.type === "change") this.queuedChanges--;
        if (this.paused && this.queuedChanges <= this.bufferSize / 2) {
          this.paused = false;
          this.open();
        }
        return { done: false, value: ev };
      }
      if (this.error !== null) {
        const e = this.error;
        this.error = null;
        throw e;
      }
      if (this.done) return { done: true, value: undefined };
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  private emit(events: SubscriptionEvent<Row>[]): void {
    for (const ev of events) {
      for (const l of [...this.listeners]) l(ev);
      if (this.iterating || this.listeners.size === 0) {
        this.queue.push(ev);
        if (ev.type === "change") this.queuedChanges++;
      }
    }
    if (events.length > 0) this.wake();
    if (this.queuedChanges > this.bufferSize && this.session !== null && this.listeners.size === 0) {
      // The reader is behind: stop the flow on the node until it catches up.
      this.paused = true;
      this.endSession();
    }
  }

  private fail(e: VerdigrisError): void {
    if (this.done) return;
    this.done = true;
    this.endSession();
    if (this.iterating || this.errorListeners.size === 0) this.error = e;
    for (const l of [...this.errorListeners]) l(e);
    this.wake();
    this.notifyClosed();
  }

  private endSession(): void {
    if (this.session === null) return;
    this.ctx.conn.remove(this.session);
    this.session = null;
  }

  private open(): void {
    if (this.done || this.paused || this.session !== null) return;
    const id = this.ctx.conn.nextId("s");
    this.session = id;
    this.healthy = false;
    this.opened = true;
    const plan = this.machine.plan();
    this.ctx.conn.add(id, {
      kind: "sub",
      message: (node: number): ClientMessage => {
        const resumed = plan.kind === "resume" && plan.node === node;
        const out: SubscriptionEvent<Row>[] = [];
        this.machine.started(node, resumed, out);
        this.emit(out);
        const skip = this.skipRows ? { skip_rows: true } : {};
        if (resumed && plan.queryId !== null) {
          return { type: "subscribe", id, query_id: plan.queryId, from: plan.from, ...skip };
        }
        return {
          type: "subscribe",
          id,
          ...statementParts(this.stmt),
          ...(resumed ? { from: plan.from } : {}),
          ...skip,
        };
      },
      deliver: (m) => {
        if (this.session !== id) return;
        this.healthy = true;
        this.step(this.message(m), id, m.error !== undefined || m.unsubscribed !== undefined);
      },
      end: (r) => {
        if (this.session !== id) return;
        this.session = null;
        this.ended(r);
      },
    });
  }

  private message(m: ServerMessage): Step {
    let ev: NodeEvent<Row>;
    try {
      if (m.columns !== undefined) {
        this.cols = m.columns;
        this.machine.identity(m.query_id, m.hash);
        ev = { type: "columns", columns: m.columns };
      } else if (m.row !== undefined) {
        ev = { type: "row", rowId: m.row[0], row: this.mapRow(m.row[1], this.cols) };
      } else if (m.eoq !== undefined) {
        ev = { type: "eoq", changeId: m.eoq.change_id ?? null };
      } else if (m.change !== undefined) {
        const [change, rowId, cells, changeId] = m.change;
        ev = { type: "change", change, rowId, row: this.mapRow(cells, this.cols), changeId };
      } else if (m.error !== undefined) {
        ev = { type: "error", message: m.error, ...(m.code ? { code: m.code } : {}), ...(m.last_change_id !== undefined ? { lastChangeId: m.last_change_id } : {}) };
      } else if (m.unsubscribed !== undefined) {
        return { kind: "reopen" };
      } else {
        return { kind: "continue" };
      }
    } catch (e) {
      const msg = `a subscription row could not be mapped (does mapRow match the columns?): ${String(e)}`;
      return { kind: "fatal", error: new VerdigrisError("decode", msg, { cause: e }) };
    }
    const out: SubscriptionEvent<Row>[] = [];
    const step = this.machine.event(ev, out);
    this.emit(out);
    return step;
  }

  /** Acts on a step; `ended` when the node already ended the session's route. */
  private step(step: Step, id: string, ended: boolean): void {
    if (step.kind === "continue") return;
    if (this.session === id) {
      if (ended) this.session = null;
      else this.endSession();
    }
    if (step.kind === "fatal") this.fail(step.error);
    else this.reopen();
  }

  private ended(r: RouteEnd): void {
    if (r.kind === "failed") {
      this.fail(r.error);
      return;
    }
    // The connection reconnects with its own backoff; this session was fine.
    this.healthy = true;
    this.lastFailure = r.error;
    this.reopen();
  }

  private reopen(): void {
    if (this.done || this.paused) return;
    if (this.healthy) this.failures = 0;
    else this.failures++;
    if (this.opened && backoffExhausted(this.ctx.backoff, this.failures)) {
      const last = this.lastFailure?.message ?? "every session ended without delivering anything";
      this.fail(new VerdigrisError("exhausted", `gave up after ${this.failures} attempts: ${last}`, { cause: this.lastFailure }));
      return;
    }
    const delay = backoffDelay(this.ctx.backoff, this.failures);
    this.reopenTimer = setTimeout(() => {
      this.reopenTimer = null;
      this.open();
    }, delay);
  }
}

/** Rejects with the signal's reason if it is aborted. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortReason(signal);
}
