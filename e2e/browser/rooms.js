// Headless Chromium for gateway/tests/rooms_browser.rs.
//
//   node e2e/browser/rooms.js <page-url>
//
// Opens the page (served by the Rust test), which opens a `switchboard.v1` WebSocket and an
// EventSource on the same room and writes what they receive into the DOM. Talks to the test
// with JSON lines on stdout:
//   {"event":"ready"}                    both have joined the room: publish now
//   {"event":"result","ws":[...],"sse":[...],"protocol":"switchboard.v1","extensions":"..."}
//                                        what the page's DOM shows once both got a message
//   {"event":"console"|"pageerror",...}  the page's console, for diagnostics
//   {"event":"error","text":...}         then exit 1
//
// Chromium is the system one ($CHROMIUM or /usr/bin/chromium); playwright-core downloads none.

const { chromium } = require("playwright-core");

const STEP_TIMEOUT_MS = 20000;

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

async function main() {
  const url = process.argv[2];
  if (!url) throw new Error("usage: node rooms.js <page-url>");
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
    const page = await browser.newPage();
    page.on("console", (m) => emit({ event: "console", type: m.type(), text: m.text() }));
    page.on("pageerror", (e) => emit({ event: "pageerror", text: String(e) }));
    await page.goto(url);
    // Both transports have joined the room.
    await page.waitForSelector("#ws-status[data-state=joined]", { state: "attached", timeout: STEP_TIMEOUT_MS });
    await page.waitForSelector("#sse-status[data-state=joined]", { state: "attached", timeout: STEP_TIMEOUT_MS });
    emit({ event: "ready" });
    // Both have written a message into the DOM.
    await page.waitForSelector("#ws li", { state: "attached", timeout: STEP_TIMEOUT_MS });
    await page.waitForSelector("#sse li", { state: "attached", timeout: STEP_TIMEOUT_MS });
    const texts = async (sel) =>
      (await page.locator(sel).allTextContents()).map((t) => JSON.parse(t));
    emit({
      event: "result",
      ws: await texts("#ws li"),
      sse: await texts("#sse li"),
      protocol: await page.locator("#ws-status").getAttribute("data-protocol"),
      extensions: await page.locator("#ws-status").getAttribute("data-extensions"),
    });
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  emit({ event: "error", text: String((e && e.stack) || e) });
  process.exit(1);
});
