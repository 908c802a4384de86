// Builds the web console into ../server/console/ (index.html, console.js, console.css), the
// files the node embeds. Deterministic: the same sources and package-lock.json give the same
// bytes, which `.ci/run` checks against the committed files (`--check`).
import * as esbuild from "esbuild";
import { mkdtempSync, readFileSync, rmSync, copyFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const dest = resolve(root, "../server/console");
const check = process.argv.includes("--check");
const out = check ? mkdtempSync(join(tmpdir(), "vd-console-")) : dest;
mkdirSync(out, { recursive: true });

await esbuild.build({
  entryPoints: [join(root, "console/src/main.ts")],
  outfile: join(out, "console.js"),
  bundle: true,
  minify: true,
  format: "esm",
  target: ["chrome111", "firefox115", "safari16"],
  charset: "utf8",
  legalComments: "eof",
  logLevel: "warning",
});
copyFileSync(join(root, "console/index.html"), join(out, "index.html"));

if (check) {
  const stale = ["index.html", "console.js", "console.css"].filter((f) => {
    let committed;
    try {
      committed = readFileSync(join(dest, f));
    } catch {
      return true;
    }
    return !committed.equals(readFileSync(join(out, f)));
  });
  rmSync(out, { recursive: true, force: true });
  if (stale.length > 0) {
    console.error(`server/console/ is stale (${stale.join(", ")}): run \`npm run build:console\` in client-ts/ and commit the result`);
    process.exit(1);
  }
  console.log("server/console/ matches its sources");
}
