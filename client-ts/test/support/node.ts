/**
 * Real `verdigris agent` processes for integration and browser tests, like the Rust tests'
 * `tests/support`: each node gets a temporary directory with its config and schema, listens on
 * 127.0.0.1, and its API address is read from the agent's `  api: http://…` startup line.
 *
 * The binary is `$VERDIGRIS_BIN`, else `$CARGO_TARGET_DIR/debug/verdigris`, else
 * `../target/debug/verdigris` (build it with `cargo build -p verdigris`).
 */

import { spawn, type ChildProcess } from "node:child_process";
import { createSocket } from "node:dgram";
import { existsSync, mkdtempSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

export function binary(): string {
  const explicit = process.env["VERDIGRIS_BIN"];
  if (explicit) return explicit;
  const target = process.env["CARGO_TARGET_DIR"] ?? resolve(here, "../../../../target");
  const bin = join(target, "debug", "verdigris");
  if (!existsSync(bin)) {
    throw new Error(`no verdigris binary at ${bin}: run \`cargo build -p verdigris\` (or set VERDIGRIS_BIN / CARGO_TARGET_DIR)`);
  }
  return bin;
}

export const TODOS_SCHEMA = "CREATE TABLE todos (id INTEGER NOT NULL PRIMARY KEY, title TEXT, done INTEGER NOT NULL DEFAULT 0, big INTEGER);\n";

export interface NodeOptions {
  schema?: string;
  /** `api.authz.bearer-token`. */
  token?: string;
  /** Fixed API port (0: any; a fixed one lets a restarted node keep its address). */
  apiPort?: number;
  /** Fixed gossip port and bootstrap peers (`127.0.0.1:port`). */
  gossipPort?: number;
  bootstrap?: string[];
}

/** A free TCP port on 127.0.0.1 (for a node that must keep its address across restarts). */
export function freeTcpPort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

/** A free UDP port on 127.0.0.1 (gossip runs over QUIC). */
export function freeUdpPort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createSocket("udp4");
    s.once("error", rej);
    s.bind(0, "127.0.0.1", () => {
      const port = s.address().port;
      s.close(() => res(port));
    });
  });
}

/** A node's directory; survives restarts of its process. */
export class NodeDir {
  readonly dir = mkdtempSync(join(tmpdir(), "vd-ts-"));
  private runs = 0;

  constructor(readonly opts: NodeOptions = {}) {
    mkdirSync(join(this.dir, "schema"));
    writeFileSync(join(this.dir, "schema", "schema.sql"), opts.schema ?? TODOS_SCHEMA);
    const o = opts;
    const boot = (o.bootstrap ?? []).map((b) => JSON.stringify(b)).join(", ");
    const text = [
      "[db]",
      `path = ${JSON.stringify(join(this.dir, "data", "state.db"))}`,
      `schema_paths = [${JSON.stringify(join(this.dir, "schema"))}]`,
      "[api]",
      `addr = "127.0.0.1:${o.apiPort ?? 0}"`,
      ...(o.token ? ["[api.authz]", `bearer-token = ${JSON.stringify(o.token)}`] : []),
      "[gossip]",
      `addr = "127.0.0.1:${o.gossipPort ?? 0}"`,
      `bootstrap = [${boot}]`,
      "plaintext = true",
      "[admin]",
      `path = ${JSON.stringify(join(this.dir, "admin.sock"))}`,
      "[perf]",
      "min_sync_backoff = 1",
      "max_sync_backoff = 2",
      "",
    ].join("\n");
    writeFileSync(join(this.dir, "config.toml"), text);
  }

  /** Starts `verdigris agent`; resolves once it printed its API address. */
  async start(): Promise<TestNode> {
    const run = ++this.runs;
    const err = join(this.dir, `agent-${run}.stderr`);
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) {
      // The developer's or CI's config overrides must not change what a test runs.
      if (v !== undefined && !k.includes("__") && !k.toUpperCase().startsWith("VERDIGRIS")) env[k] = v;
    }
    env["NO_COLOR"] = "1";
    const proc = spawn(binary(), ["-c", join(this.dir, "config.toml"), "agent"], {
      env,
      stdio: ["ignore", "pipe", openSync(err, "a")],
    });
    const url = await new Promise<string>((res, rej) => {
      let out = "";
      const timer = setTimeout(() => fail(new Error("timed out")), 30_000);
      const fail = (e: Error) => {
        clearTimeout(timer);
        proc.kill("SIGKILL");
        rej(new Error(`agent in ${this.dir} did not start (${e.message}); stderr:\n${this.log(run)}`));
      };
      proc.stdout!.on("data", (d: Buffer) => {
        out += d.toString();
        const m = /^\s*api: (http:\/\/\S+)/m.exec(out);
        if (m && /^\s*gossip: \S+/m.test(out)) {
          clearTimeout(timer);
          res(m[1]!);
        }
      });
      proc.once("exit", (code) => fail(new Error(`exited with ${code}`)));
    });
    proc.stdout!.resume();
    return new TestNode(this, proc, url, run);
  }

  log(run = this.runs): string {
    try {
      return readFileSync(join(this.dir, `agent-${run}.stderr`), "utf8");
    } catch {
      return "";
    }
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A running agent; `stop()` (SIGTERM) or `kill()` (SIGKILL) it, and always one of them. */
export class TestNode {
  constructor(
    readonly dir: NodeDir,
    readonly proc: ChildProcess,
    /** `http://127.0.0.1:port` */
    readonly url: string,
    readonly run: number,
  ) {
    proc.removeAllListeners("exit");
    alive.add(this);
    proc.once("exit", () => alive.delete(this));
  }

  /** Graceful shutdown; resolves when the process exited. */
  stop(): Promise<void> {
    return this.signal("SIGTERM");
  }

  kill(): Promise<void> {
    return this.signal("SIGKILL");
  }

  private signal(sig: NodeJS.Signals): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return Promise.resolve();
    return new Promise((res) => {
      this.proc.once("exit", () => res());
      this.proc.kill(sig);
    });
  }

  /** `POST path` with a JSON body through the HTTP API (for writes that bypass the client under test). */
  async post(path: string, body: unknown, token = this.dir.opts.token): Promise<unknown> {
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (token) headers["authorization"] = `Bearer ${token}`;
    const r = await fetch(`${this.url}${path}`, { method: "POST", headers, body: JSON.stringify(body) });
    const text = await r.text();
    if (!r.ok) throw new Error(`${path} answered ${r.status}: ${text}`);
    return JSON.parse(text);
  }

  async get(path: string, token = this.dir.opts.token): Promise<unknown> {
    const r = await fetch(`${this.url}${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
    const text = await r.text();
    if (!r.ok) throw new Error(`${path} answered ${r.status}: ${text}`);
    return JSON.parse(text);
  }

  /** Runs statements as one transaction over HTTP. */
  exec(...statements: unknown[]): Promise<unknown> {
    return this.post("/v1/transactions", statements);
  }
}

const alive = new Set<TestNode>();
process.once("exit", () => {
  // No node outlives the test process, even when a test fails before stopping it.
  for (const n of alive) n.proc.kill("SIGKILL");
});

/** Waits until `cond()` resolves true (polling every 20 ms), `ms` at most. */
export async function eventually(cond: () => boolean | Promise<boolean>, what: string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
