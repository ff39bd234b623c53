// Headless Chromium for gateway/tests/client_js.rs: opens a page (served by the Rust test) that
// runs @switchboard/client from dist/ and keeps what it sees in `window.report`.
//
//   node browser.mjs <page-url>
//
// Prints {"event":"report","report":{...}} whenever the page's `report.phase` changes, and
// passes every line of stdin to the page's `window.step(line)`. Exits after phase "done".
// {"event":"console"|"pageerror",...} lines are the page's console; {"event":"error"} then exit 1.
// Chromium is the system one ($CHROMIUM or /usr/bin/chromium), driven by the playwright-core of
// e2e/browser/node_modules.

import { createRequire } from "node:module";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const require = createRequire(fileURLToPath(new URL("../../../../e2e/browser/package.json", import.meta.url)));
const { chromium } = require("playwright-core");
const emit = (o) => process.stdout.write(JSON.stringify(o) + "\n");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage();
  page.on("console", (m) => emit({ event: "console", type: m.type(), text: m.text() }));
  page.on("pageerror", (e) => emit({ event: "pageerror", text: String(e) }));
  const lines = createInterface({ input: process.stdin });
  lines.on("line", (l) => page.evaluate((line) => window.step(line), l).catch(() => {}));
  await page.goto(process.argv[2]);
  let phase = null;
  const end = Date.now() + 170000;
  while (phase != "done") {
    if (Date.now() > end) throw new Error(`page stuck in phase ${phase}`);
    const report = await page.evaluate(() => window.report);
    if (report && report.phase != phase) {
      phase = report.phase;
      emit({ event: "report", report });
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  lines.close();
} catch (e) {
  emit({ event: "error", text: String(e?.stack ?? e) });
  process.exitCode = 1;
} finally {
  await browser.close();
}
