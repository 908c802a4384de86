/**
 * {@link LiveQuery}: a subscription folded into its current rows (`Map<rowId, row>`), telling
 * what each update changed — the twin of the Rust client's `LiveQuery` (`client-rs/src/live.rs`).
 */

import type { VerdigrisError } from "./errors.js";
import type { ResetReason, SubscriptionEvent } from "./machine.js";
import type { Subscription } from "./subscription.js";
import type { ChangeId, RowId } from "./types.js";

/** What one update changed in {@link LiveQuery.rows}. */
export interface LiveUpdate<Row> {
  /** A complete snapshot replaced every row (first update, or after a reset); `inserted` lists every row. */
  snapshot: boolean;
  /** Why the rows were replaced, when this snapshot follows a reset. */
  reset: ResetReason | null;
  /** Rows now present that were not. */
  inserted: RowId[];
  /** Rows whose values changed. */
  updated: RowId[];
  /** Rows removed, with their last values. */
  deleted: [RowId, Row][];
  /** The change id the rows are at. */
  changeId: ChangeId | null;
}

function emptyUpdate<Row>(): LiveUpdate<Row> {
  return { snapshot: false, reset: null, inserted: [], updated: [], deleted: [], changeId: null };
}

/**
 * The current rows of a subscription, rebuilt from its events (pure, no I/O). While a snapshot
 * arrives the previous rows stay; they are replaced at once when it is complete, so `rows` is
 * always a whole result, never a partial one.
 */
export class LiveState<Row> {
  rows = new Map<RowId, Row>();
  columns: string[] = [];
  changeId: ChangeId | null = null;
  private incoming: Map<RowId, Row> | null = null;
  private reset: ResetReason | null = null;

  /** Applies one event, recording its effect in `up`; returns whether `up` is ready to report. */
  apply(ev: SubscriptionEvent<Row>, up: LiveUpdate<Row>): boolean {
    switch (ev.type) {
      case "reset":
        this.reset = ev.reason;
        this.incoming = null;
        this.changeId = null;
        return false;
      case "columns":
        this.columns = ev.columns;
        this.incoming = new Map();
        return false;
      case "row":
        if (this.incoming !== null) this.incoming.set(ev.rowId, ev.row);
        else this.upsert(ev.rowId, ev.row, up);
        return false;
      case "eoq":
        this.changeId = ev.changeId;
        if (this.incoming !== null) {
          this.rows = this.incoming;
          this.incoming = null;
          Object.assign(up, emptyUpdate<Row>());
          up.snapshot = true;
          up.reset = this.reset;
          this.reset = null;
          up.inserted = [...this.rows.keys()];
        }
        up.changeId = ev.changeId;
        return true;
      case "change": {
        if (this.reset !== null && this.incoming === null) {
          // A reset without a snapshot (skipRows): the rows are unknown.
          this.rows.clear();
          up.snapshot = true;
          up.reset = this.reset;
          this.reset = null;
        }
        this.changeId = ev.changeId;
        up.changeId = ev.changeId;
        if (ev.change === "delete") {
          const last = this.rows.get(ev.rowId) ?? ev.row;
          this.rows.delete(ev.rowId);
          const i = up.inserted.indexOf(ev.rowId);
          if (i >= 0) up.inserted.splice(i, 1); // inserted then deleted: nothing to report
          else {
            up.updated = up.updated.filter((r) => r !== ev.rowId);
            up.deleted.push([ev.rowId, last]);
          }
        } else {
          this.upsert(ev.rowId, ev.row, up);
        }
        return this.incoming === null;
      }
    }
  }

  private upsert(rid: RowId, row: Row, up: LiveUpdate<Row>): void {
    const had = this.rows.has(rid);
    this.rows.set(rid, row);
    if (had) {
      if (!up.inserted.includes(rid) && !up.updated.includes(rid)) up.updated.push(rid);
      return;
    }
    const d = up.deleted.findIndex(([r]) => r === rid);
    if (d >= 0) {
      // Deleted then re-inserted under the same id within one update: an update.
      up.deleted.splice(d, 1);
      up.updated.push(rid);
    } else {
      up.inserted.push(rid);
    }
  }
}

export type UpdateListener<Row> = (update: LiveUpdate<Row>, live: LiveQuery<Row>) => void;

/**
 * A subscription kept as a map of its current rows.
 *
 * ```ts
 * const live = client.liveQuery<Machine>("SELECT id, address FROM machines WHERE healthy = 1");
 * live.on((up) => {
 *   for (const id of up.inserted) console.log("new", live.rows.get(id));
 *   for (const [id, row] of up.deleted) console.log("gone", id, row);
 * });
 * await live.ready; // the first snapshot is in
 * ```
 */
export class LiveQuery<Row> implements AsyncIterable<LiveUpdate<Row>> {
  private readonly state = new LiveState<Row>();
  private readonly listeners = new Set<UpdateListener<Row>>();
  private readonly errorListeners = new Set<(e: VerdigrisError) => void>();
  private pending = emptyUpdate<Row>();
  private ready_: Promise<void>;
  private failure: VerdigrisError | null = null;

  /** @internal Use `Client.liveQuery`. */
  constructor(readonly subscription: Subscription<Row>) {
    let resolve!: () => void;
    let reject!: (e: unknown) => void;
    this.ready_ = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    // A rejection nobody awaits must not crash Node: callers learn of it through onError.
    this.ready_.catch(() => undefined);
    subscription.on(
      (ev) => {
        if (this.state.apply(ev, this.pending)) {
          const up = this.pending;
          this.pending = emptyUpdate<Row>();
          if (up.snapshot) resolve();
          for (const l of [...this.listeners]) l(up, this);
        }
      },
      (e) => {
        this.failure = e;
        reject(e);
        for (const l of [...this.errorListeners]) l(e);
      },
    );
  }

  /** The current rows by row id (replaced as a whole when a new snapshot completes). */
  get rows(): ReadonlyMap<RowId, Row> {
    return this.state.rows;
  }
  get columns(): readonly string[] {
    return this.state.columns;
  }
  /** The change id {@link rows} are at. */
  get changeId(): ChangeId | null {
    return this.state.changeId;
  }
  /** Resolves when the first snapshot is complete; rejects if the subscription fails first. */
  get ready(): Promise<void> {
    return this.ready_;
  }
  /** The error that ended the live query, if any. */
  get error(): VerdigrisError | null {
    return this.failure;
  }

  /** Calls `onUpdate` after every update, `onError` if it fails; returns an unsubscribe function. */
  on(onUpdate: UpdateListener<Row>, onError?: (e: VerdigrisError) => void): () => void {
    this.listeners.add(onUpdate);
    if (onError) this.errorListeners.add(onError);
    return () => {
      this.listeners.delete(onUpdate);
      if (onError) this.errorListeners.delete(onError);
    };
  }

  /** Ends the subscription. */
  close(): void {
    this.subscription.close();
  }

  /** Updates as they happen (updates that arrive while the reader is busy are merged into one). */
  [Symbol.asyncIterator](): AsyncIterator<LiveUpdate<Row>> {
    let queued: LiveUpdate<Row> | null = null;
    let wake: (() => void) | null = null;
    const off = this.on(
      (up) => {
        queued = queued === null ? up : merge(queued, up);
        wake?.();
      },
      () => wake?.(),
    );
    const offClose = this.subscription.onClose(() => wake?.());
    const finish = (): IteratorResult<LiveUpdate<Row>> => {
      off();
      offClose();
      return { done: true, value: undefined };
    };
    return {
      next: async () => {
        for (;;) {
          if (queued !== null) {
            const up: LiveUpdate<Row> = queued;
            queued = null;
            return { done: false, value: up };
          }
          if (this.failure !== null) {
            off();
            offClose();
            throw this.failure;
          }
          if (this.subscription.closed) return finish();
          await new Promise<void>((r) => (wake = r));
          wake = null;
        }
      },
      return: async () => {
        this.close();
        return finish();
      },
    };
  }
}

/** Two consecutive updates as one (a snapshot in `b` replaces everything before it). */
function merge<Row>(a: LiveUpdate<Row>, b: LiveUpdate<Row>): LiveUpdate<Row> {
  if (b.snapshot) return b;
  const out: LiveUpdate<Row> = { ...a, inserted: [...a.inserted], updated: [...a.updated], deleted: [...a.deleted], changeId: b.changeId };
  for (const [rid, row] of b.deleted) {
    const i = out.inserted.indexOf(rid);
    if (i >= 0) out.inserted.splice(i, 1);
    else {
      out.updated = out.updated.filter((r) => r !== rid);
      out.deleted.push([rid, row]);
    }
  }
  for (const rid of b.inserted) {
    const d = out.deleted.findIndex(([r]) => r === rid);
    if (d >= 0) {
      out.deleted.splice(d, 1);
      out.updated.push(rid);
    } else out.inserted.push(rid);
  }
  for (const rid of b.updated) if (!out.inserted.includes(rid) && !out.updated.includes(rid)) out.updated.push(rid);
  return out;
}
