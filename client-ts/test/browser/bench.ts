// Browser benchmark: one headless Chromium page of the console follows a 1,000-row live query
// while 200 rows/s change (20 update transactions of 10 rows per second, over HTTP), and prints
// the event-to-DOM latency (an update's arrival in the page to its rows being in the DOM,
// including the wait for the animation frame that applies it) and the write-to-DOM latency
// (the writer's clock before its HTTP request to the row's cells changing in the page).
//
//   cargo build -p verdigris && (cd client-ts && npm run bench:browser)
//   BENCH_SECS=60 BENCH_RATE=400 … for other loads; VERDIGRIS_BIN picks another binary.
import { launch } from "../support/browser.js";
import { NodeDir } from "../support/node.js";

const ROWS = 1000;
const SECS = Number(process.env["BENCH_SECS"] ?? 20);
const RATE = Number(process.env["BENCH_RATE"] ?? 200);
const TICK_MS = 50;
const PER_TICK = Math.max(1, Math.round((RATE * TICK_MS) / 1000));

function pct(xs: number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(s.length * q) - 1))]!;
}

function summary(xs: number[]): string {
  const f = (v: number) => `${v.toFixed(1)} ms`;
  return `p50 ${f(pct(xs, 0.5))}, p99 ${f(pct(xs, 0.99))}, max ${f(Math.max(...xs))}`;
}

async function main(): Promise<void> {
  const dir = new NodeDir({ schema: "CREATE TABLE bench (id INTEGER NOT NULL PRIMARY KEY, v INTEGER NOT NULL DEFAULT 0, sent_ms INTEGER NOT NULL DEFAULT 0);\n" });
  const node = await dir.start();
  const browser = await launch();
  try {
    const values = Array.from({ length: ROWS }, (_, i) => `(${i + 1}, 0, 0)`).join(",");
    await node.exec(`INSERT INTO bench (id, v, sent_ms) VALUES ${values}`);
    const page = await browser.newPage({ viewport: { width: 1360, height: 900 } });
    await page.goto(node.url);
    await page.waitForSelector("#main:not([hidden])");
    await page.fill("#sql", "SELECT id, v, sent_ms FROM bench");
    await page.click("#subscribe");
    await page.waitForFunction((n) => document.querySelectorAll("#result tbody tr").length === n, ROWS, { timeout: 30_000 });
    // Write-to-DOM: when a row's cells change, compare the clock with the row's sent_ms.
    await page.evaluate(() => {
      const w = window as unknown as { writeToDom: number[] };
      w.writeToDom = [];
      const body = document.querySelector("#result tbody")!;
      new MutationObserver((muts) => {
        const now = Date.now();
        const seen = new Set<Element>();
        for (const m of muts) {
          const tr = (m.target instanceof Element ? m.target : m.target.parentElement)?.closest("tr");
          if (!tr || seen.has(tr)) continue;
          seen.add(tr);
          const sent = Number(tr.querySelectorAll("td")[2]?.textContent);
          if (sent > 0) w.writeToDom.push(now - sent);
        }
      }).observe(body, { subtree: true, childList: true, characterData: true });
      (window as unknown as { __verdigrisConsole: { results: { eventToDomMs: number[] } } }).__verdigrisConsole.results.eventToDomMs.length = 0;
    });

    const t0 = Date.now();
    let changed = 0;
    let next = t0;
    while (Date.now() - t0 < SECS * 1000) {
      const ids = new Set<number>();
      while (ids.size < PER_TICK) ids.add(1 + Math.floor(Math.random() * ROWS));
      await node.exec([`UPDATE bench SET v = v + 1, sent_ms = ? WHERE id IN (${[...ids].join(",")})`, [Date.now()]]);
      changed += ids.size;
      next += TICK_MS;
      const wait = next - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
    const elapsed = (Date.now() - t0) / 1000;
    // The page has caught up when its values sum to the number of updates made.
    const expected = changed;
    await page.waitForFunction(
      (want) => [...document.querySelectorAll("#result tbody tr")].reduce((s, tr) => s + Number(tr.querySelectorAll("td")[1]?.textContent), 0) === want,
      expected,
      { timeout: 30_000 },
    );
    const { eventToDom, writeToDom } = await page.evaluate(() => {
      const w = window as unknown as { writeToDom: number[]; __verdigrisConsole: { results: { eventToDomMs: number[] } } };
      return { eventToDom: w.__verdigrisConsole.results.eventToDomMs, writeToDom: w.writeToDom };
    });
    console.log(`browser bench: a ${ROWS}-row live query in the console (headless Chromium), ${changed} row changes at ${(changed / elapsed).toFixed(1)} rows/s over ${elapsed.toFixed(1)} s`);
    console.log(`  event-to-DOM: ${summary(eventToDom)} (${eventToDom.length} updates)`);
    console.log(`  write-to-DOM: ${summary(writeToDom)} (${writeToDom.length} rows)`);
    console.log(`  the page ended equal to the table (sum of v = ${expected})`);
    const p99 = pct(eventToDom, 0.99);
    if (!(p99 <= 100)) {
      console.error(`event-to-DOM p99 ${p99.toFixed(1)} ms is over the 100 ms goal`);
      process.exitCode = 1;
    }
  } finally {
    await browser.close();
    await node.kill();
    dir.remove();
  }
}

await main();
