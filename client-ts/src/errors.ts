/** Errors of the client: one class, with a `kind` saying what failed and whether to retry. */

import type { ChangeId, ErrorCode } from "./types.js";

/**
 * What went wrong:
 * - `server`: the node refused or failed a request (see `code` and `status`);
 * - `unauthorized`: a missing or wrong bearer token (HTTP 401);
 * - `connect`: no connection to a node could be made;
 * - `connection_lost`: the connection dropped before the answer came (the outcome of a
 *   transaction is then unknown);
 * - `timeout`: no answer in time;
 * - `exhausted`: every retry allowed by the backoff policy failed (see `cause`);
 * - `missed_change`: a subscription skipped a change and `resnapshotOnGap` is off;
 * - `decode`: the node sent something this client cannot read;
 * - `config`: a bad option (node URL, token…);
 * - `closed`: the client was closed.
 */
export type ErrorKind =
  | "server"
  | "unauthorized"
  | "connect"
  | "connection_lost"
  | "timeout"
  | "exhausted"
  | "missed_change"
  | "decode"
  | "config"
  | "closed";

export interface ErrorDetails {
  code?: ErrorCode;
  status?: number;
  node?: string;
  expected?: ChangeId;
  got?: ChangeId;
  cause?: unknown;
}

export class VerdigrisError extends Error {
  readonly kind: ErrorKind;
  /** The node's error code (WebSocket errors). */
  readonly code?: ErrorCode;
  /** The HTTP status, for errors answered over HTTP. */
  readonly status?: number;
  /** The node (base URL) the error came from, when known. */
  readonly node?: string;
  /** For `missed_change`: the change id expected, and the one received (if any). */
  readonly expected?: ChangeId;
  readonly got?: ChangeId;

  constructor(kind: ErrorKind, message: string, details: ErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = "VerdigrisError";
    this.kind = kind;
    if (details.code !== undefined) this.code = details.code;
    if (details.status !== undefined) this.status = details.status;
    if (details.node !== undefined) this.node = details.node;
    if (details.expected !== undefined) this.expected = details.expected;
    if (details.got !== undefined) this.got = details.got;
  }

  /** Whether another attempt (perhaps on another node) may succeed. */
  get retryable(): boolean {
    switch (this.kind) {
      case "connect":
      case "connection_lost":
      case "timeout":
        return true;
      case "server":
        return (
          this.code === "internal" ||
          this.code === "shutdown" ||
          (this.status !== undefined && (this.status >= 500 || this.status === 429))
        );
      default:
        return false;
    }
  }
}

/** The error an aborted operation rejects with: the signal's reason, or an `AbortError`. */
export function abortReason(signal: AbortSignal): unknown {
  if (signal.reason !== undefined) return signal.reason;
  const e = new Error("the operation was aborted");
  e.name = "AbortError";
  return e;
}
