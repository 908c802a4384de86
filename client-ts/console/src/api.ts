/** The node's read-only JSON endpoints (docs/api.md), with the console's token. */

export class ApiError extends Error {
  constructor(
    message: string,
    /** HTTP status; 0 when the node could not be reached. */
    readonly status: number,
  ) {
    super(message);
  }
}

export interface Member {
  actor_id: string;
  address: string;
  state: string;
  rtt_ms: number | null;
  last_seen_secs: number | null;
  head: number;
  gaps: number;
  partial: number;
  lag_secs: number | null;
  last_applied_secs: number | null;
}

export interface Members {
  actor_id: string;
  gossip_addr: string | null;
  head: number;
  gaps: number;
  members: Member[];
}

export interface Stats {
  time: number;
  local_transactions: number;
  local_rows: number;
  remote_versions: number;
  remote_rows: number;
  gaps: number;
  lag_p99_secs: number;
}

export interface TableInfo {
  name: string;
  rows: number;
  columns: string[];
}

export interface SubInfo {
  id: string;
  sql: string;
  plan: string;
  rows: number;
  listeners: number;
  last_change_id: number;
}

export class NodeApi {
  constructor(
    readonly base: string,
    private readonly token: () => string | undefined,
  ) {}

  async get<T>(path: string): Promise<T> {
    const t = this.token();
    let r: Response;
    try {
      r = await fetch(`${this.base}${path}`, {
        headers: t ? { authorization: `Bearer ${t}` } : {},
        signal: AbortSignal.timeout(5000),
        cache: "no-store",
      });
    } catch (e) {
      throw new ApiError(`cannot reach the node at ${this.base} (${(e as Error).message})`, 0);
    }
    const text = await r.text();
    if (!r.ok) {
      let msg = text;
      try {
        msg = (JSON.parse(text) as { error?: string }).error ?? text;
      } catch {
        // Not JSON.
      }
      throw new ApiError(`${path}: ${r.status} ${msg}`, r.status);
    }
    return JSON.parse(text) as T;
  }

  members(): Promise<Members> {
    return this.get("/v1/cluster/members");
  }
  stats(): Promise<Stats> {
    return this.get("/v1/stats");
  }
  tables(): Promise<{ tables: TableInfo[] }> {
    return this.get("/v1/tables");
  }
  subscriptions(): Promise<{ subscriptions: SubInfo[] }> {
    return this.get("/v1/subscriptions");
  }
}
