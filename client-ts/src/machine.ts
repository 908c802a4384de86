/**
 * The subscription state machine, the same as the Rust client's (`client-rs/src/sub.rs`): it
 * follows change ids, turns node events into {@link SubscriptionEvent}s, and decides after
 * every event or failure whether to go on, resume from the last change id, take a fresh
 * snapshot (announced by a `reset` event), or give up. Pure logic, no I/O.
 */

import { VerdigrisError } from "./errors.js";
import type { ChangeId, ChangeType, ErrorCode, RowId } from "./types.js";

/** Why a subscription started over with a fresh snapshot. */
export type ResetReason =
  /** A change id was skipped (`expected`, `got`). */
  | { kind: "gap"; expected: ChangeId; got: ChangeId }
  /** The node no longer keeps the changes after the last change id received. */
  | { kind: "too_old" }
  /** The subscription no longer exists on the node. */
  | { kind: "not_found" }
  /** The client failed over to another node, whose change ids are unrelated. */
  | { kind: "node_changed" }
  /** A snapshot was cut off, or the node answered a resume with a new snapshot. */
  | { kind: "interrupted" };

/**
 * One event of a subscription. Apply them in order: `columns`, `row`s, `eoq` (snapshot
 * complete), then `change`s. A `reset` means: forget every row; a fresh snapshot follows
 * (unless the subscription skips rows).
 */
export type SubscriptionEvent<Row> =
  | { type: "columns"; columns: string[] }
  | { type: "row"; rowId: RowId; row: Row }
  | { type: "eoq"; changeId: ChangeId | null }
  | { type: "change"; change: ChangeType; rowId: RowId; row: Row; changeId: ChangeId }
  | { type: "reset"; reason: ResetReason };

/** An event as the node sends it (before the machine). */
export type NodeEvent<Row> =
  | { type: "columns"; columns: string[] }
  | { type: "row"; rowId: RowId; row: Row }
  | { type: "eoq"; changeId: ChangeId | null }
  | { type: "change"; change: ChangeType; rowId: RowId; row: Row; changeId: ChangeId }
  | { type: "error"; message: string; code?: ErrorCode; lastChangeId?: ChangeId };

/** How to open the next session. */
export type Plan =
  | { kind: "fresh" }
  | { kind: "resume"; node: number; queryId: string | null; from: ChangeId };

/** What to do after an event or failure. */
export type Step = { kind: "continue" } | { kind: "reopen" } | { kind: "fatal"; error: VerdigrisError };

const CONTINUE: Step = { kind: "continue" };
const REOPEN: Step = { kind: "reopen" };

/** What a node's error means for a subscription. */
export type ErrorClass =
  | { kind: "too_slow"; at: ChangeId | null }
  | { kind: "resnapshot"; reason: ResetReason }
  | { kind: "transient" }
  | { kind: "fatal" };

/** Classifies an error: by its WebSocket code when there is one, else by its text. */
export function classify(code: ErrorCode | undefined, msg: string, last?: ChangeId): ErrorClass {
  const noExisting = msg.includes("no existing subscription");
  switch (code) {
    case "too_slow":
      return { kind: "too_slow", at: last ?? tooSlowId(msg) };
    case "too_old":
      return { kind: "resnapshot", reason: { kind: "too_old" } };
    case "not_found":
      return { kind: "resnapshot", reason: { kind: "not_found" } };
    case "internal":
    case "shutdown":
    case "duplicate_id":
      return { kind: "transient" };
    case "bad_request":
      if (noExisting) return { kind: "resnapshot", reason: { kind: "not_found" } };
      // `from` ahead of the subscription: another history (a node whose data was reset).
      if (msg.includes("is ahead of")) return { kind: "resnapshot", reason: { kind: "too_old" } };
      return { kind: "fatal" };
    case "limit":
    case "timeout":
      return { kind: "fatal" };
    case undefined:
      if (msg.includes("too slow")) return { kind: "too_slow", at: tooSlowId(msg) };
      if (msg.includes("deleted older changes") || msg.includes("is ahead of")) {
        return { kind: "resnapshot", reason: { kind: "too_old" } };
      }
      if (noExisting || msg.includes("could not find subscription")) {
        return { kind: "resnapshot", reason: { kind: "not_found" } };
      }
      return { kind: "transient" };
  }
}

/** `N` in "subscriber too slow: disconnected after change id N; …". */
function tooSlowId(msg: string): ChangeId | null {
  const m = /after change id (\d+)/.exec(msg);
  return m ? Number(m[1]) : null;
}

/** The state of one subscription across sessions. */
export class Machine {
  /** The last change id applied (from `eoq` or a change); `null` before the first `eoq`. */
  last: ChangeId | null = null;
  queryId: string | null = null;
  hash: string | null = null;
  /** The node (index) holding `queryId` and `last`. */
  node: number | null = null;
  /** The consumer received rows or changes since the last reset. */
  private delivered = false;
  /** Why the next snapshot replaces everything (emitted as `reset` before its `columns`). */
  private pendingReset: ResetReason | null = null;

  constructor(
    private readonly skipRows: boolean,
    private readonly resnapshotOnGap: boolean,
  ) {}

  plan(): Plan {
    if (this.node !== null && this.last !== null) {
      return { kind: "resume", node: this.node, queryId: this.queryId, from: this.last };
    }
    return { kind: "fresh" };
  }

  /** A session started on `node`; `resumed` if it continues after {@link last}. */
  started<R>(node: number, resumed: boolean, out: SubscriptionEvent<R>[]): void {
    if (!resumed) {
      if (this.last !== null && this.pendingReset === null) {
        const changed = this.node !== null && this.node !== node;
        this.pendingReset = { kind: changed ? "node_changed" : "interrupted" };
      }
      this.last = null;
      this.queryId = null;
      this.hash = null;
      if (this.skipRows && this.delivered) {
        // No snapshot will come to carry the reset: announce it now.
        out.push({ type: "reset", reason: this.pendingReset ?? { kind: "interrupted" } });
        this.pendingReset = null;
        this.delivered = false;
      }
    }
    this.node = node;
  }

  /** The node named the subscription (WebSocket `columns`). */
  identity(queryId?: string, hash?: string): void {
    if (queryId !== undefined) this.queryId = queryId;
    if (hash !== undefined) this.hash = hash;
  }

  event<R>(ev: NodeEvent<R>, out: SubscriptionEvent<R>[]): Step {
    switch (ev.type) {
      case "columns":
        if (this.delivered || this.pendingReset !== null) {
          out.push({ type: "reset", reason: this.pendingReset ?? { kind: "interrupted" } });
          this.pendingReset = null;
        }
        this.last = null;
        this.delivered = true;
        out.push(ev);
        return CONTINUE;
      case "row":
        this.delivered = true;
        out.push(ev);
        return CONTINUE;
      case "eoq":
        this.last = ev.changeId;
        this.delivered = true;
        out.push(ev);
        return CONTINUE;
      case "change": {
        const l = this.last;
        if (l !== null && ev.changeId <= l) return CONTINUE; // already applied
        if (l !== null && ev.changeId !== l + 1) {
          return this.gap(l + 1, ev.changeId, { kind: "gap", expected: l + 1, got: ev.changeId });
        }
        if (this.pendingReset !== null) {
          // skip_rows after a fresh subscribe: changes of a new history.
          if (this.delivered) out.push({ type: "reset", reason: this.pendingReset });
          this.pendingReset = null;
        }
        this.last = ev.changeId;
        this.delivered = true;
        out.push(ev);
        return CONTINUE;
      }
      case "error":
        return this.error(ev.code, ev.message, ev.lastChangeId);
    }
  }

  /** An error from the node: the session is over either way. */
  error(code: ErrorCode | undefined, msg: string, last?: ChangeId): Step {
    const c = classify(code, msg, last);
    switch (c.kind) {
      case "too_slow":
        return REOPEN;
      case "resnapshot":
        return this.gap(this.last === null ? 1 : this.last + 1, null, c.reason);
      case "transient":
        return REOPEN;
      case "fatal": {
        const details = code === undefined ? {} : { code };
        return { kind: "fatal", error: new VerdigrisError("server", msg, details) };
      }
    }
  }

  private gap(expected: ChangeId, got: ChangeId | null, why: ResetReason): Step {
    if (!this.resnapshotOnGap && this.delivered) {
      const msg =
        got === null
          ? `missed changes from change id ${expected} on (${why.kind})`
          : `missed a change: expected change id ${expected}, got ${got}`;
      return {
        kind: "fatal",
        error: new VerdigrisError("missed_change", msg, got === null ? { expected } : { expected, got }),
      };
    }
    this.resnapshot(why);
    return REOPEN;
  }

  /** Forget the position: the next session is a fresh subscription. */
  resnapshot(why: ResetReason): void {
    this.last = null;
    this.queryId = null;
    this.hash = null;
    this.pendingReset ??= why;
  }
}
