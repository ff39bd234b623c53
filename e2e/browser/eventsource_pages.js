// Headless Chromium for gateway/tests/rooms_browser.rs: several pages, each with its own
// EventSource, kept open while the test drains and restarts the gateway.
//
//   node e2e/browser/eventsource_pages.js <page-url> <pages>
//
// Opens <pages> pages (one browser context each, so they share no connection pool) on the
// page served by the Rust test. Each page opens an EventSource and keeps counts of what it
// saw in `window.sseState()`. Talks to the test with JSON lines:
//   stdout {"event":"ready"}                       every page's EventSource has joined
//   stdin  state                                   -> stdout {"event":"state","pages":[...]}
//          (per page: joined, shutdowns, errors, readyState, messages)
//   stdin  quit                                    close the browser and exit 0
//   stdout {"event":"console"|"pageerror",...}     the pages' console, for diagnostics
//   stdout {"event":"error","text":...}            then exit 1
//
// Chromium is the system one ($CHROMIUM or /usr/bin/chromium); playwright-core downloads none.

const readline = require("readline");
const { chromium } = require("playwright-core");

const STEP_TIMEOUT_MS = 30000;

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

async function main() {
  const url = process.argv[2];
  const count = Number(process.argv[3] || "1");
  if (!url) throw new Error("usage: node eventsource_pages.js <page-url> <pages>");
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  try {
    const pages = [];
    for (let i = 0; i < count; i++) {
      const context = await browser.newContext();
      const page = await context.newPage();
      page.on("console", (m) => emit({ event: "console", page: i, type: m.type(), text: m.text() }));
      page.on("pageerror", (e) => emit({ event: "pageerror", page: i, text: String(e) }));
      await page.goto(url);
      pages.push(page);
    }
    for (const page of pages) {
      await page.waitForFunction(() => window.sseState().joined > 0, null, { timeout: STEP_TIMEOUT_MS });
    }
    emit({ event: "ready" });
    const lines = readline.createInterface({ input: process.stdin });
    for await (const line of lines) {
      const cmd = line.trim();
      if (cmd === "state") {
        const states = [];
        for (const page of pages) states.push(await page.evaluate(() => window.sseState()));
        emit({ event: "state", pages: states });
      } else if (cmd === "quit") {
        break;
      }
    }
  } finally {
    await browser.close();
  }
}

main().then(
  // stdin (still open) must not keep node alive.
  () => process.exit(0),
).catch((e) => {
  emit({ event: "error", text: String((e && e.stack) || e) });
  process.exit(1);
});
