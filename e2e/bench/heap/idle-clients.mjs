// Opens N idle rooms connections (JSON protocol, switchboard.v1), each joined to a room of its
// own, prints "ready <joined>" once every join is answered, then holds them until stdin closes.
// usage: node idle-clients.mjs URL N
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

// `ws` comes from the e2e/proto package (installed by `npm ci` there).
const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, "../../proto/package.json"));
const WebSocket = require("ws");

const [url, nArg] = process.argv.slice(2);
const n = Number(nArg ?? 2000);
const inFlight = 128;
const sockets = [];
let joined = 0;
let failed = 0;

function open(i) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, "switchboard.v1");
    let settled = false;
    const done = (ok) => {
      if (settled) return;
      settled = true;
      ok ? joined++ : failed++;
      resolve();
    };
    ws.on("open", () => ws.send(JSON.stringify({ type: "join", room: `solo:${i}`, id: "j" })));
    ws.on("message", (data) => {
      const m = JSON.parse(data.toString());
      if (m.type === "joined") done(true);
      else if (m.type === "error") done(false);
    });
    ws.on("error", () => done(false));
    sockets.push(ws);
  });
}

let next = 0;
async function worker() {
  while (next < n) await open(next++);
}
await Promise.all(Array.from({ length: inFlight }, worker));
console.log(`ready ${joined} ${failed}`);
process.stdin.resume();
process.stdin.on("end", () => {
  for (const ws of sockets) ws.terminate();
  process.exit(0);
});
