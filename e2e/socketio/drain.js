// Socket.IO clients across a gateway drain, for gateway/tests/socketio.rs.
// Usage: node drain.js URL ORIGIN CLIENTS
// Opens CLIENTS connections (random `pin` each, default transports, reconnection on), waits until
// all are upgraded to WebSocket and have one ack, prints `{"event":"ready"}`; then counts the
// disconnects (the drain) and waits until every client has connected again, upgraded, and got an
// ack over the new connection; prints a JSON summary and exits 0 (the test judges the counts).
"use strict";
const crypto = require("crypto");
const { io } = require("socket.io-client");

const [url, origin, clientsArg] = process.argv.slice(2);
const N = Number(clientsArg);
const TIMEOUT_MS = 120000;
const summary = { event: "summary", clients: N, disconnects: {}, reconnected: 0, acksAfter: 0, samePinnedInstance: 0, errors: [] };

function upgradedAndAcked(socket) {
  return new Promise((resolve) => {
    const engine = socket.io.engine;
    const done = () => socket.emitWithAck("msg", 0).then((r) => resolve(r.instance));
    if (engine.transport.name === "websocket") done();
    else engine.once("upgrade", done);
  });
}

function open() {
  const socket = io(url, {
    query: { pin: crypto.randomUUID() },
    forceNew: true,
    reconnectionDelay: 200,
    reconnectionDelayMax: 2000,
    extraHeaders: { Origin: origin },
  });
  const s = { socket, connects: 0 };
  s.first = new Promise((resolve) => {
    s.second = new Promise((resolve2) => {
      socket.on("connect", () => {
        s.connects += 1;
        if (s.connects === 1) upgradedAndAcked(socket).then(resolve);
        else if (s.connects === 2) upgradedAndAcked(socket).then(resolve2);
      });
    });
  });
  socket.on("disconnect", (reason) => {
    summary.disconnects[reason] = (summary.disconnects[reason] || 0) + 1;
  });
  return s;
}

async function main() {
  const states = Array.from({ length: N }, open);
  const first = await Promise.all(states.map((s) => s.first));
  console.log(JSON.stringify({ event: "ready" }));
  const timeout = new Promise((r) => setTimeout(() => r("timeout"), TIMEOUT_MS));
  await Promise.all(
    states.map(async (s, i) => {
      const instance = await Promise.race([s.second, timeout]);
      if (instance === "timeout") return;
      summary.reconnected += 1;
      summary.acksAfter += 1;
      if (instance === first[i]) summary.samePinnedInstance += 1;
    }),
  );
  for (const s of states) s.socket.close();
}

main()
  .catch((e) => summary.errors.push(`driver: ${e.message}`))
  .finally(() => {
    console.log(JSON.stringify(summary));
    process.exit(0);
  });
