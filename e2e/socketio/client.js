// Drives N real socket.io-client connections (default transports: polling, then the upgrade to
// WebSocket) through the gateway, for gateway/tests/socketio.rs.
// Usage: node client.js URL ORIGIN CLIENTS MESSAGES PIN_KEY
//   PIN_KEY "pin": each client sends `?pin=<random uuid>` (docs/migrating-socketio.md's advice);
//   anything else: no pin query (the route pins on something else, e.g. `sid`).
// Reconnection is off, so every failure is counted rather than retried away.
// Prints one JSON summary line and exits 0 (the test judges the counts).
"use strict";
const crypto = require("crypto");
const { io } = require("socket.io-client");

const [url, origin, clientsArg, messagesArg, pinKey] = process.argv.slice(2);
const N = Number(clientsArg);
const M = Number(messagesArg);
const TIMEOUT_MS = 60000;

const summary = {
  event: "summary",
  clients: N,
  connected: 0,
  upgraded: 0,
  connectErrors: 0,
  errors: [],
  acks: 0,
  instances: {},
  shoutAcks: 0,
  deliveries: 0,
  expectedDeliveries: 0,
};

function withTimeout(promise, what) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timeout: ${what}`)), TIMEOUT_MS)),
  ]);
}

function open() {
  const query = pinKey === "pin" ? { pin: crypto.randomUUID() } : {};
  const socket = io(url, {
    query,
    reconnection: false,
    forceNew: true,
    timeout: TIMEOUT_MS,
    extraHeaders: { Origin: origin },
  });
  const state = { socket, news: 0, instance: null };
  socket.on("news", () => {
    state.news += 1;
    summary.deliveries += 1;
  });
  state.ready = withTimeout(
    new Promise((resolve, reject) => {
      socket.on("connect_error", (e) => {
        summary.connectErrors += 1;
        summary.errors.push(`connect_error: ${e.message}`);
        reject(e);
      });
      socket.on("connect", () => {
        summary.connected += 1;
        const engine = socket.io.engine;
        const upgraded = () => {
          summary.upgraded += 1;
          resolve();
        };
        if (engine.transport.name === "websocket") upgraded();
        else engine.once("upgrade", upgraded);
      });
      socket.on("disconnect", (reason) => {
        if (reason === "io client disconnect") return; // the driver's own close at the end
        summary.errors.push(`disconnect: ${reason}`);
        reject(new Error(reason));
      });
    }),
    "connect and upgrade",
  );
  return state;
}

async function main() {
  const states = Array.from({ length: N }, open);
  const settled = await Promise.allSettled(states.map((s) => s.ready));
  const live = states.filter((_, i) => settled[i].status === "fulfilled");

  // M acknowledged messages per client, over the upgraded WebSocket.
  await Promise.all(
    live.map(async (s) => {
      for (let n = 0; n < M; n++) {
        const reply = await withTimeout(s.socket.emitWithAck("msg", n), "ack");
        if (reply.n === n) summary.acks += 1;
        s.instance = reply.instance;
      }
      summary.instances[s.instance] = (summary.instances[s.instance] || 0) + 1;
    }),
  );

  // Each client asks its instance to broadcast to the room; without an adapter a broadcast
  // reaches the room members on that instance: each client expects one `news` per client on its
  // own instance.
  for (const s of live) {
    await withTimeout(s.socket.emitWithAck("shout", s.socket.id), "shout ack");
    summary.shoutAcks += 1;
  }
  for (const s of live) summary.expectedDeliveries += summary.instances[s.instance];
  const deadline = Date.now() + TIMEOUT_MS;
  while (summary.deliveries < summary.expectedDeliveries && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
  }
  summary.upgradedAtEnd = live.filter((s) => s.socket.io.engine.transport.name === "websocket").length;
  for (const s of states) s.socket.close();
}

main()
  .catch((e) => summary.errors.push(`driver: ${e.message}`))
  .finally(() => {
    console.log(JSON.stringify(summary));
    process.exit(0);
  });
