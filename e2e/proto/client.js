// A Node client of the binary room protocol (subprotocol switchboard.v1.proto), built with
// protobufjs from the committed schema, as an application would. Driven by
// gateway/tests/rooms_proto_node.rs:
//
//   node client.js <ws-url> <rooms.proto>
//
// Two protobuf clients join one room; `a` publishes a JSON and a binary payload, pings, and
// sends a few refused messages; both record what they receive. It prints one JSON line
// {"event":"ready"} and then waits for the gateway to drain (the test sends SIGTERM to it):
// both clients must get a `shutdown` message and the close. The last line is the summary.
"use strict";

const path = require("path");
const protobuf = require("protobufjs");
const WebSocket = require("ws");

const [url, protoPath] = process.argv.slice(2);
const SUBPROTOCOL = "switchboard.v1.proto";
const ROOM = "chat:node";

function fail(msg) {
  console.error(msg);
  process.exit(1);
}

async function main() {
  const root = await protobuf.load(path.resolve(protoPath));
  const ClientMessage = root.lookupType("switchboard.v1.ClientMessage");
  const ServerMessage = root.lookupType("switchboard.v1.ServerMessage");
  const plain = (m) =>
    ServerMessage.toObject(m, { longs: Number, bytes: Buffer, defaults: false, oneofs: true });

  function connect(name) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, [SUBPROTOCOL]);
      ws.binaryType = "nodebuffer";
      const c = { name, ws, got: [], waiters: [], closed: null, textFrames: 0 };
      ws.on("open", () => {
        if (ws.protocol !== SUBPROTOCOL) reject(new Error(`subprotocol ${ws.protocol}`));
        resolve(c);
      });
      ws.on("error", reject);
      ws.on("message", (data, isBinary) => {
        if (!isBinary) {
          c.textFrames += 1;
          return;
        }
        const m = plain(ServerMessage.decode(data));
        c.got.push(m);
        c.waiters = c.waiters.filter((w) => !w(m));
      });
      ws.on("close", (code, reason) => {
        c.closed = { code, reason: reason.toString() };
        c.waiters = c.waiters.filter((w) => !w(null));
      });
    });
  }

  function send(c, msg) {
    const err = ClientMessage.verify(msg);
    if (err) fail(`bad ClientMessage: ${err}`);
    c.ws.send(ClientMessage.encode(ClientMessage.create(msg)).finish());
  }

  // The next server message matching `pred` (or one already received and not yet taken).
  function next(c, pred, what) {
    const i = c.got.findIndex(pred);
    if (i >= 0) return Promise.resolve(c.got.splice(i, 1)[0]);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`${c.name}: no ${what} in 10s`)), 10000);
      c.waiters.push((m) => {
        if (m === null) {
          clearTimeout(t);
          reject(new Error(`${c.name}: closed while waiting for ${what}`));
          return true;
        }
        if (!pred(m)) return false;
        c.got.splice(c.got.indexOf(m), 1);
        clearTimeout(t);
        resolve(m);
        return true;
      });
    });
  }
  const reply = (c, id) => next(c, (m) => m.id === id, `reply ${id}`);

  const a = await connect("a");
  const b = await connect("b");
  const summary = {};

  send(a, { id: "ja", join: { room: ROOM } });
  send(b, { id: "jb", join: { room: ROOM } });
  summary.joined = [await reply(a, "ja"), await reply(b, "jb")];

  send(a, { id: "p1", publish: { room: ROOM, json: Buffer.from(JSON.stringify({ hi: "node" })) } });
  summary.ack1 = await reply(a, "p1");
  const bin = Buffer.from([0, 1, 2, 253, 254, 255]);
  send(a, { id: "p2", publish: { room: ROOM, binary: bin } });
  summary.ack2 = await reply(a, "p2");
  send(a, { id: "p3", publish: { room: ROOM, json: Buffer.from('"typing"'), ephemeral: true } });
  summary.ack3 = await reply(a, "p3");

  send(a, { id: "ping", ping: {} });
  summary.pong = await reply(a, "ping");
  send(a, { id: "nopayload", publish: { room: ROOM } });
  summary.noPayload = await reply(a, "nopayload");
  send(a, { id: "notjoined", leave: { room: "chat:elsewhere" } });
  summary.notJoined = await reply(a, "notjoined");
  send(a, { id: "forbidden", join: { room: "secret" } });
  summary.forbidden = await reply(a, "forbidden");
  send(a, { id: "who", presence: { room: ROOM } });
  summary.snapshot = await reply(a, "who");

  // What `b` received of the room, in order (the live copies of a's three publishes).
  const isMsg = (m) => m.kind === "message";
  const msgs = [];
  for (let i = 0; i < 3; i++) msgs.push(await next(b, isMsg, `message ${i}`));
  summary.received = msgs.map((m) => ({
    seq: m.message.seq || 0,
    epoch: m.message.epoch,
    from: m.message.from || null,
    ephemeral: !!m.message.ephemeral,
    json: m.message.json ? JSON.parse(m.message.json.toString()) : undefined,
    binaryHex: m.message.binary ? m.message.binary.toString("hex") : undefined,
  }));

  send(b, { id: "lb", leave: { room: ROOM } });
  summary.left = await reply(b, "lb");
  summary.presenceLeave = await next(
    a,
    (m) => m.kind === "presence" && m.presence.event === "leave",
    "the leave of b"
  );
  // A text frame is not part of this subprotocol.
  b.ws.send('{"type":"ping","id":"text"}');
  summary.textFrame = await next(b, (m) => m.kind === "error", "the error for a text frame");

  console.log(JSON.stringify({ event: "ready" }));
  const drained = async (c) => {
    const s = await next(c, (m) => m.kind === "shutdown", "shutdown");
    while (!c.closed) await new Promise((r) => setTimeout(r, 20));
    return { shutdown: s, close: c.closed, textFrames: c.textFrames };
  };
  summary.drain = [await drained(a), await drained(b)];
  console.log(JSON.stringify(summary));
  process.exit(0);
}

main().catch((e) => fail(e.stack || String(e)));
