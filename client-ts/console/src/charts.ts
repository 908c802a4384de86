/**
 * The activity charts (uPlot): writes/s and changes applied/s on this node, derived from two
 * readings of `GET /v1/stats`; replication lag per member from `GET /v1/cluster/members`.
 */

import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import type { Members, Stats } from "./api.js";
import { currentLag } from "./panels.js";

/** Points kept (one per poll). */
const WINDOW = 120;
const COLORS: [string, string, ...string[]] = ["#2f8f7a", "#c2410c", "#1d4ed8", "#a21caf", "#b7791f", "#0f766e"];

function width(el: HTMLElement): number {
  return Math.max(280, el.clientWidth || 400);
}

export class RateChart {
  private readonly plot: uPlot;
  private readonly data: [number[], number[], number[]] = [[], [], []];
  private prev: Stats | null = null;

  constructor(private readonly el: HTMLElement) {
    this.plot = new uPlot(
      {
        width: width(el),
        height: 170,
        title: "this node, per second",
        scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(5, max * 1.1)] } },
        series: [
          {},
          { label: "writes/s", stroke: COLORS[0], width: 2 },
          { label: "changes applied/s", stroke: COLORS[1], width: 2 },
        ],
      },
      this.data,
      el,
    );
  }

  /** Adds a reading; the first one only sets the baseline. */
  push(s: Stats): void {
    const p = this.prev;
    this.prev = s;
    if (p === null || s.time <= p.time) return;
    const dt = s.time - p.time;
    this.data[0].push(s.time);
    this.data[1].push((s.local_transactions - p.local_transactions) / dt);
    this.data[2].push((s.remote_rows - p.remote_rows) / dt);
    if (this.data[0].length > WINDOW) for (const d of this.data) d.shift();
    this.plot.setData(this.data);
  }

  resize(): void {
    this.plot.setSize({ width: width(this.el), height: 170 });
  }
}

export class LagChart {
  private plot: uPlot | null = null;
  private actors: string[] = [];
  private data: number[][] = [[]];

  constructor(private readonly el: HTMLElement) {}

  push(m: Members, time: number): void {
    const actors = m.members.map((x) => x.actor_id).sort();
    if (actors.join() !== this.actors.join()) this.rebuild(actors);
    this.data[0]!.push(time);
    this.actors.forEach((a, i) => {
      const x = m.members.find((y) => y.actor_id === a);
      this.data[i + 1]!.push(x ? currentLag(x.lag_secs, x.last_applied_secs) * 1000 : 0);
    });
    if (this.data[0]!.length > WINDOW) for (const d of this.data) d.shift();
    this.plot!.setData(this.data as uPlot.AlignedData);
  }

  private rebuild(actors: string[]): void {
    this.plot?.destroy();
    this.actors = actors;
    this.data = [[], ...actors.map(() => [])];
    this.plot = new uPlot(
      {
        width: width(this.el),
        height: 170,
        title: actors.length ? "replication lag from each member (ms)" : "replication lag (no other members)",
        scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(10, max * 1.1)] } },
        series: [{}, ...actors.map((a, i) => ({ label: a.slice(0, 8), stroke: COLORS[i % COLORS.length]!, width: 2 }))],
      },
      this.data as uPlot.AlignedData,
      this.el,
    );
  }

  resize(): void {
    this.plot?.setSize({ width: width(this.el), height: 170 });
  }
}
