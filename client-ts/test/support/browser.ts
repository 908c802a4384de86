/**
 * Headless Chromium for the browser test and benchmark: Debian's `chromium` package
 * (`/usr/bin/chromium`, or `$CHROMIUM`) driven by playwright-core, which never downloads a
 * browser of its own.
 */

import { existsSync } from "node:fs";
import { chromium, type Browser } from "playwright-core";

export async function launch(): Promise<Browser> {
  const path = process.env["CHROMIUM"] ?? "/usr/bin/chromium";
  if (!existsSync(path)) throw new Error(`no Chromium at ${path}: apt-get install chromium (or set CHROMIUM)`);
  return chromium.launch({ executablePath: path, headless: true, args: ["--no-sandbox", "--disable-gpu"] });
}
