/**
 * A scripted node for unit tests: a WebSocket class whose instances the test opens, feeds
 * messages, fails and closes by hand, recording what the client sent.
 */

import type { WebSocketLike } from "../../src/connection.js";
import { parseJson, stringifyJson } from "../../src/json.js";
import type { ClientMessage } from "../../src/types.js";

export class FakeSocket implements WebSocketLike {
  static all: FakeSocket[] = [];
  readyState = 0;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  readonly sent: ClientMessage[] = [];
  closedByClient: number | null = null;

  constructor(
    readonly url: string,
    readonly protocols?: string | string[],
  ) {
    FakeSocket.all.push(this);
  }

  static reset(): void {
    FakeSocket.all = [];
  }
  static last(): FakeSocket {
    const s = FakeSocket.all[FakeSocket.all.length - 1];
    if (!s) throw new Error("no socket was opened");
    return s;
  }

  send(data: string): void {
    if (this.readyState !== 1) throw new Error("send on a socket that is not open");
    this.sent.push(parseJson(data) as ClientMessage);
  }
  close(code?: number): void {
    this.closedByClient = code ?? 1000;
    this.readyState = 3;
  }

  // The node's side.
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }
  push(msg: unknown): void {
    this.onmessage?.({ data: typeof msg === "string" ? msg : stringifyJson(msg) });
  }
  /** The node closes an open socket. */
  drop(code = 1001, reason = "going away"): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  /** The handshake fails (nothing listening, or refused). */
  refuse(message = "connect ECONNREFUSED"): void {
    this.readyState = 3;
    this.onerror?.({ message });
    this.onclose?.({ code: 1006, reason: "" });
  }
  /** Messages of one type sent so far. */
  sentOf<T extends ClientMessage["type"]>(type: T): Extract<ClientMessage, { type: T }>[] {
    return this.sent.filter((m): m is Extract<ClientMessage, { type: T }> => m.type === type);
  }
}

/** Waits until `cond()` holds, checking after every turn of the event loop (5 s at most). */
export async function until(cond: () => boolean, what = "condition", ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}
