/** The node URLs a client may use, and which one is current (failover moves to the next). */

import { VerdigrisError } from "./errors.js";

export class Nodes {
  readonly urls: readonly string[];
  private cur = 0;

  /** Accepts `http(s)://host:port` (a path prefix is kept) or a bare `host:port`. */
  constructor(input: string | readonly string[]) {
    const list = typeof input === "string" ? [input] : [...input];
    if (list.length === 0) throw new VerdigrisError("config", "no node URL given");
    this.urls = list.map(normalize);
  }

  /** The current node: `[index, base URL]`. */
  current(): [number, string] {
    return [this.cur, this.urls[this.cur]!];
  }

  get(i: number): string {
    return this.urls[i]!;
  }

  /** Moves past node `failed`, unless another caller already did. */
  advance(failed: number): void {
    if (this.cur === failed) this.cur = (failed + 1) % this.urls.length;
  }
}

function normalize(raw: string): string {
  let s = raw.trim();
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(s)) s = `http://${s}`;
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw new VerdigrisError(
      "config",
      `${JSON.stringify(raw)} is not a node URL; expected e.g. http://127.0.0.1:8080`,
    );
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") {
    throw new VerdigrisError("config", `node URL ${JSON.stringify(raw)} must be http:// or https://`);
  }
  return `${u.origin}${u.pathname.replace(/\/+$/, "")}`;
}

/** The WebSocket URL of a node's `/v1/ws`. */
export function wsUrl(base: string): string {
  return `${base.replace(/^http/, "ws")}/v1/ws`;
}
