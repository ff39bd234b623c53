// The Node side of gateway/tests/client_js.rs: real @switchboard/client connections (dist/) to
// the real gateway. One scenario per run:
//
//   node --experimental-websocket driver.mjs <scenario> '<json args>'
//
// Talks to the Rust test with JSON lines: it prints {"event": ...} lines (the last one is
// {"event":"result",...}) and, where the scenario needs the test to act (restart the gateway,
// publish through the API), waits for a line on stdin. {"event":"error","text":...} then exit 1.

import { createHmac } from "node:crypto";
import { createInterface } from "node:readline";
import http from "node:http";
import { SwitchboardClient } from "../../dist/index.js";
import { protoCodec } from "../../dist/proto.js";

const [scenario, rawArgs] = process.argv.slice(2);
const args = JSON.parse(rawArgs ?? "{}");
const emit = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
/** Wait for the test's go-ahead (any line on stdin). */
async function go() {
  const { value, done } = await stdinLines.next();
  if (done) throw new Error("stdin ended");
  return value;
}

/** An HS256 token for `sub`, valid `ttl` seconds (the tests' HS256_SECRET). */
function sign(sub, ttl) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const head = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, iat: now, exp: now + ttl })}`;
  return `${head}.${createHmac("sha256", args.secret).update(head).digest("base64url")}`;
}

function client(sub, extra = {}) {
  const calls = { token: 0 };
  const c = new SwitchboardClient({
    url: args.url,
    getToken: () => {
      calls.token++;
      return sign(sub, args.ttl ?? 600);
    },
    ...extra,
  });
  c.calls = calls;
  c.log = [];
  for (const e of ["connected", "disconnected", "reconnecting", "shutdown", "gap", "error"])
    c.on(e, (v) => c.log.push({ e, t: Date.now(), ...v }));
  return c;
}

/** Resolves when `pred()` holds (polled), rejects after `ms`. */
async function until(what, pred, ms = 20000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

function joined(c, room, handlers = {}) {
  const got = [];
  const joins = [];
  const gaps = [];
  const sub = c.join(room, {
    onMessage: (m) => got.push(m),
    onJoined: (j) => joins.push(j),
    onGap: (g) => gaps.push(g),
    ...handlers,
  });
  return { sub, got, joins, gaps, ready: () => until(`${room} joined`, () => joins.length > 0) };
}

/** POST /v1/publish on the admin listener (what an app backend does). */
async function publishApi(body) {
  const res = await fetch(`http://${args.admin}/v1/publish`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${args.publishToken}` },
    body: JSON.stringify(body),
  });
  const json = await res.json();
  if (res.status != 200) throw new Error(`publish API ${res.status}: ${JSON.stringify(json)}`);
  return json.results[0];
}

const seqs = (ms) => ms.map((m) => m.seq);

const scenarios = {
  // join/publish/ack between two clients, presence snapshot and diffs.
  async basic() {
    const alice = client("alice");
    const bob = client("bob");
    const a = joined(alice, "chat:lobby");
    const members = [];
    const b = joined(bob, "chat:lobby", { onPresence: (e) => members.push([e.event, e.members.map((m) => m.user).sort()]) });
    await a.ready();
    await b.ready();
    const acks = [];
    for (const text of ["one", "two", "three"]) acks.push(await alice.publish("chat:lobby", { text }));
    const typing = await a.sub.publish({ typing: true }, { ephemeral: true });
    await until("bob's four messages", () => b.got.length >= 4);
    await until("alice's four messages", () => a.got.length >= 4);
    let forbidden = null;
    await alice.publish("secret:x", "no").catch((e) => (forbidden = e.code));
    alice.close();
    await until("alice's leave", () => members.some(([e]) => e == "leave"));
    bob.close();
    emit({
      event: "result",
      acks,
      typingAck: typing,
      alice: a.got,
      bob: b.got,
      forbidden,
      presence: members,
      transport: "websocket",
    });
  },

  // A protobuf client (switchboard.v1.proto) and a JSON client in one room: same messages, same
  // seqs, acks either way, JSON and binary payloads, an ephemeral one, a presence snapshot.
  async mixed() {
    const protocols = {};
    /** A WebSocket that records the subprotocol the gateway selected, per user. */
    const recording = (sub) =>
      class extends WebSocket {
        constructor(...a) {
          super(...a);
          this.addEventListener("open", () => (protocols[sub] = this.protocol));
        }
      };
    const alice = client("alice", { codec: protoCodec, WebSocket: recording("alice") });
    const bob = client("bob", { WebSocket: recording("bob") });
    const a = joined(alice, "chat:mixed");
    const b = joined(bob, "chat:mixed");
    await a.ready();
    await b.ready();
    const acks = [];
    acks.push(await alice.publish("chat:mixed", { text: "from proto", n: 1.5 }));
    acks.push(await bob.publish("chat:mixed", { text: "from json" }));
    acks.push(await alice.publish("chat:mixed", new Uint8Array([0, 1, 2, 255])));
    acks.push(await bob.publish("chat:mixed", new Uint8Array([9, 8])));
    const typing = await alice.publish("chat:mixed", { typing: true }, { ephemeral: true });
    await until("five messages on both", () => a.got.length >= 5 && b.got.length >= 5);
    const members = (await a.sub.presence()).map((m) => m.user).sort();
    let forbidden = null;
    await alice.publish("secret:x", "no").catch((e) => (forbidden = e.code));
    await sleep(300); // anything extra (a duplicate) would arrive now
    alice.close();
    bob.close();
    emit({ event: "result", protocols, acks, typingAck: typing, alice: a.got, bob: b.got, members, forbidden });
  },

  // A client across a gateway restart (NATS history): the test publishes while it is down.
  // `encoding: "proto"` in the args: the same over the protobuf encoding.
  async resume() {
    const c = client("alice", args.encoding == "proto" ? { codec: protoCodec } : {});
    const r = joined(c, "chat:resume");
    await r.ready();
    const before = [];
    for (let i = 0; i < 2; i++) before.push((await c.publish("chat:resume", { i })).seq);
    await until("own messages", () => r.got.length == 2);
    emit({ event: "ready", seqs: before });
    const published = JSON.parse(await go()).seqs;
    await until("the gap", () => r.got.length >= 2 + published.length, 60000);
    await sleep(500); // anything extra (a duplicate) would arrive now
    c.close();
    emit({ event: "result", got: seqs(r.got), joins: r.joins, gaps: r.gaps, log: c.log });
  },

  // Publishes made while the gateway is down are queued and flushed in order after the resume.
  async offline() {
    const c = client("alice", { queueLimit: 5 });
    const r = joined(c, "chat:offline");
    await r.ready();
    emit({ event: "ready" });
    await until("the disconnect", () => !c.transport, 30000);
    const acks = [];
    for (let i = 0; i < 5; i++) acks.push(c.publish("chat:offline", { i }));
    let overflow = null;
    await c.publish("chat:offline", { i: 5 }).catch((e) => (overflow = e.code));
    emit({ event: "queued" });
    const settled = await Promise.all(acks);
    await until("own messages", () => r.got.length >= 5, 30000);
    c.close();
    emit({ event: "result", acks: settled, got: r.got.map((m) => m.data.i), seqs: seqs(r.got), overflow, log: c.log });
  },

  // A token that expires every few seconds, refreshed before exp: rooms kept, nothing lost.
  async refresh() {
    const c = client("alice");
    const r = joined(c, "chat:refresh");
    await r.ready();
    const acks = [];
    const end = Date.now() + args.runMs;
    for (let i = 0; Date.now() < end; i++) {
      acks.push((await c.publish("chat:refresh", { i })).seq);
      await sleep(200);
    }
    await until("own messages", () => r.got.length >= acks.length);
    await sleep(300);
    c.close();
    emit({ event: "result", acks, got: seqs(r.got), gaps: r.gaps, tokens: c.calls.token, log: c.log });
  },

  // A proxy that refuses every WebSocket upgrade (403) and passes plain HTTP through: the client
  // falls back to SSE, publishes through the app's HTTP endpoint, and resumes a cut stream.
  async sse() {
    const target = new URL(args.url.replace(/^ws/, "http"));
    const streams = new Set();
    let upgrades = 0;
    const proxy = http.createServer((req, res) => {
      const up = http.request(
        { host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers },
        (ur) => {
          res.writeHead(ur.statusCode, ur.headers);
          ur.pipe(res);
          streams.add(res);
          res.on("close", () => streams.delete(res));
        },
      );
      up.on("error", () => res.destroy());
      req.pipe(up);
    });
    proxy.on("upgrade", (req, socket) => {
      upgrades++;
      socket.end("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    });
    await new Promise((r) => proxy.listen(0, "127.0.0.1", r));
    const url = `ws://127.0.0.1:${proxy.address().port}${target.pathname}`;
    const c = new SwitchboardClient({
      url,
      getToken: () => sign("alice", 600),
      backoffBaseMs: 50,
      httpPublish: (room, payload) => publishApi({ room, ...payload }),
    });
    const log = [];
    for (const e of ["connected", "disconnected", "error", "reconnecting"]) c.on(e, (v) => (log.push({ e, ...v }), process.env.DEBUG && console.error(e, v)));
    const r = joined(c, "chat:sse");
    await r.ready();
    const acks = [];
    for (let i = 0; i < 2; i++) acks.push(await c.publish("chat:sse", { i }));
    await until("two messages", () => r.got.length == 2);
    // Cut the stream; publish two more while it is down; the reconnect resumes them.
    // Counted from the client's events: polling `c.transport` can miss a reconnect that is
    // faster than the poll (backoff 50 ms with jitter).
    const cuts = log.filter((l) => l.e == "disconnected").length;
    for (const s of streams) s.destroy();
    await until("the disconnect", () => log.filter((l) => l.e == "disconnected").length > cuts);
    for (let i = 2; i < 4; i++) acks.push(await publishApi({ room: "chat:sse", data: { i } }));
    await until("the resume", () => r.got.length >= 4);
    await sleep(300);
    c.close();
    proxy.close();
    emit({ event: "result", upgrades, acks: acks.map((a) => a.seq), got: seqs(r.got), joins: r.joins, gaps: r.gaps, log });
  },

  // Clients on two gateway pods over NATS: a publish on one reaches the other, presence too.
  async pods() {
    const a = client("alice", { url: args.urls[0] });
    const b = client("bob", { url: args.urls[1] });
    const members = [];
    const ra = joined(a, "chat:pods");
    const rb = joined(b, "chat:pods", { onPresence: (e) => members.push(e.members.map((m) => m.user).sort()) });
    await ra.ready();
    await rb.ready();
    await until("alice in bob's presence", () => members.some((m) => m.includes("alice")));
    const fromA = await a.publish("chat:pods", { from: "a" });
    const fromB = await b.publish("chat:pods", { from: "b" });
    await until("both messages on both pods", () => ra.got.length >= 2 && rb.got.length >= 2);
    a.close();
    b.close();
    emit({ event: "result", acks: [fromA.seq, fromB.seq], a: seqs(ra.got), b: seqs(rb.got), members: members.at(-1) });
  },

  // Many clients across a drain: when does each one try again, and does it come back?
  async drain() {
    const n = args.clients;
    const clients = [];
    for (let i = 0; i < n; i++) {
      const c = client(`u${i}`, { backoffBaseMs: 500 });
      c.room = joined(c, "chat:drain");
      clients.push(c);
    }
    await until("every client joined", () => clients.every((c) => c.room.joins.length > 0), 60000);
    emit({ event: "ready" });
    await until("every client back", () => clients.every((c) => c.room.joins.length > 1), 120000);
    emit({ event: "reconnected" });
    await go(); // the test has published one message
    await until("the message on every client", () => clients.every((c) => c.room.got.length > 0), 30000);
    const out = clients.map((c) => {
      const shutdown = c.log.find((l) => l.e == "shutdown");
      const down = c.log.find((l) => l.e == "disconnected");
      const next = c.log.find((l) => l.e == "reconnecting");
      return {
        hint: shutdown?.reconnectAfterMs ?? null,
        shutdownAt: shutdown?.t ?? null,
        code: down?.code ?? null,
        // The first reconnect attempt after the drain's close: when it was scheduled for.
        retryAt: next ? next.t + next.delayMs : null,
        delay: next?.delayMs ?? null,
        reconnectedAt: c.log.filter((l) => l.e == "connected")[1]?.t ?? null,
        recovered: c.room.joins.at(-1).recovered,
      };
    });
    for (const c of clients) c.close();
    emit({ event: "result", clients: out });
  },
};

try {
  if (!scenarios[scenario]) throw new Error(`unknown scenario ${scenario}`);
  await scenarios[scenario]();
  process.exit(0);
} catch (e) {
  emit({ event: "error", text: String(e?.stack ?? e) });
  process.exit(1);
}
