// The connection logic without a network: a scripted WebSocket stands in for the socket (the
// STYLE's socket-free session tests); the real gateway is in gateway/tests/client_js.rs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SwitchboardClient } from "../../dist/index.js";

class ScriptedSocket {
  static all = [];
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.sent = [];
    this.readyState = 0;
    this.at = Date.now();
    ScriptedSocket.all.push(this);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close(code = 1000, reason = "") {
    if (this.readyState == 3) return;
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({ code, reason }));
  }
  // test side
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  deliver(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  drop(code = 1006, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

/** A client on scripted sockets; `next()` waits for the next socket it opens. */
function scripted(opts = {}) {
  ScriptedSocket.all = [];
  let tokens = 0;
  const events = [];
  const client = new SwitchboardClient({
    url: "ws://gw.test/chat",
    WebSocket: ScriptedSocket,
    transports: ["websocket"],
    backoffBaseMs: 1,
    backoffCapMs: 5,
    getToken: () => `t${++tokens}`,
    ...opts,
  });
  for (const e of ["connected", "disconnected", "reconnecting", "gap", "error", "shutdown"])
    client.on(e, (v) => events.push([e, v]));
  const next = async () => {
    const n = ScriptedSocket.all.length;
    for (let i = 0; i < 500 && ScriptedSocket.all.length == n; i++) await tick(1);
    const ws = ScriptedSocket.all[n];
    assert.ok(ws, "the client opened another socket");
    ws.open();
    return ws;
  };
  return { client, next, events };
}

const pos = (seq) => ({ seq, epoch: "e1" });
const msg = (room, seq, data = seq) => ({ type: "message", room, seq, epoch: "e1", ts: 1, data });

test("every connection offers switchboard.v1 with a fresh token from getToken", async (t) => {
  const { client, next } = scripted();
  t.after(() => client.close());
  const a = await next();
  assert.deepEqual(a.protocols, ["switchboard.v1", "bearer.t1"]);
  a.drop();
  const b = await next();
  assert.deepEqual(b.protocols, ["switchboard.v1", "bearer.t2"]);
});

test("a reconnect re-joins with since, drops messages before the joined reply and duplicates", async (t) => {
  const { client, next } = scripted();
  t.after(() => client.close());
  const got = [];
  const joins = [];
  const a = await next();
  client.join("chat:a", { onMessage: (m) => got.push(m.seq), onJoined: (j) => joins.push(j) });
  const j1 = a.sent.at(-1);
  assert.deepEqual(j1, { type: "join", room: "chat:a", id: j1.id });
  a.deliver({ type: "joined", room: "chat:a", recovered: false, position: pos(3), id: j1.id });
  a.deliver(msg("chat:a", 5));
  a.deliver(msg("chat:a", 9));
  a.drop();

  const b = await next();
  const j2 = b.sent[0];
  assert.deepEqual(j2, { type: "join", room: "chat:a", id: j2.id, since: pos(9) });
  b.deliver(msg("chat:a", 12)); // live, before the reply: the replay sends it again
  b.deliver({ type: "joined", room: "chat:a", recovered: true, position: pos(12), id: j2.id });
  b.deliver(msg("chat:a", 9)); // duplicate
  b.deliver(msg("chat:a", 12));
  b.deliver({ ...msg("chat:a", 0), ephemeral: true });
  assert.deepEqual(got, [5, 9, 12, 0]);
  assert.deepEqual(
    joins.map((j) => [j.recovered, j.resumed]),
    [
      [false, false],
      [true, true],
    ],
  );
});

test("recovered false on a resume and a lost message are surfaced as gaps", async (t) => {
  const { client, next, events } = scripted();
  t.after(() => client.close());
  const gaps = [];
  const a = await next();
  const sub = client.join("chat:a", { onGap: (g) => gaps.push(g) });
  a.deliver({ type: "joined", room: "chat:a", recovered: false, position: pos(3), id: a.sent[0].id });
  assert.equal(gaps.length, 0, "a first join is not a gap");
  a.deliver({ type: "lost", room: "chat:a", from: pos(4), to: pos(8), ephemeral: 2 });
  assert.deepEqual(sub.position, pos(8));
  a.drop();
  const b = await next();
  assert.deepEqual(b.sent[0].since, pos(8));
  b.deliver({ type: "joined", room: "chat:a", recovered: false, position: { seq: 2, epoch: "e2" }, id: b.sent[0].id });
  assert.deepEqual(gaps, [
    { room: "chat:a", reason: "lost", from: pos(4), to: pos(8), ephemeral: 2 },
    { room: "chat:a", reason: "not_recovered", position: { seq: 2, epoch: "e2" } },
  ]);
  assert.equal(events.filter(([e]) => e == "gap").length, 2);
});

test("publishes made offline are queued, bounded, and flushed in order after the joins", async (t) => {
  const { client, next } = scripted({ queueLimit: 3 });
  t.after(() => client.close());
  client.join("chat:a");
  const acks = [client.publish("chat:a", "one"), client.publish("chat:a", "two"), client.publish("chat:a", "three")];
  await assert.rejects(client.publish("chat:a", "four"), { code: "queue_full" });
  await assert.rejects(client.publish("chat:a", "typing", { ephemeral: true }), { code: "offline" });
  const a = await next();
  assert.deepEqual(
    a.sent.map((f) => f.type + ":" + (f.data ?? f.room)),
    ["join:chat:a", "publish:one", "publish:two", "publish:three"],
  );
  a.deliver({ type: "ack", id: a.sent[1].id, seq: 7, epoch: "e1" });
  assert.deepEqual(await acks[0], { seq: 7, epoch: "e1" });
  a.deliver({ type: "error", id: a.sent[2].id, code: "rejected", reason: "no links" });
  await assert.rejects(acks[1], { code: "rejected", message: "no links" });
  a.drop();
  // Unacknowledged when the connection dropped: sent again (at-least-once).
  const b = await next();
  assert.deepEqual(
    b.sent.map((f) => f.data ?? f.type),
    ["join", "three"],
  );
  b.deliver({ type: "ack", id: b.sent[1].id, seq: 9, epoch: "e1" });
  assert.deepEqual(await acks[2], { seq: 9, epoch: "e1" });
});

test("a full queue with drop-oldest rejects the oldest unsent publish for the new one", async (t) => {
  const { client } = scripted({ queueLimit: 2, queueOverflow: "drop-oldest" });
  t.after(() => client.close());
  const first = client.publish("chat:a", 1);
  const rest = [client.publish("chat:a", 2), client.publish("chat:a", 3)];
  await assert.rejects(first, { code: "dropped" });
  client.close();
  for (const p of rest) await assert.rejects(p, { code: "closed" });
});

test("the shutdown hint holds the reconnect back at least reconnectAfterMs", async (t) => {
  const { client, next, events } = scripted();
  t.after(() => client.close());
  const a = await next();
  a.deliver({ type: "shutdown", reconnectAfterMs: 60 });
  a.drop(1001, "server draining, reconnect");
  const r = events.find(([e]) => e == "reconnecting")[1];
  assert.ok(r.delayMs >= 55, `delay ${r.delayMs}`);
  assert.deepEqual(
    events.find(([e]) => e == "disconnected")[1],
    { code: 1001, reason: "server draining, reconnect" },
  );
});

test("a 1009 close rejects the oldest unacknowledged publish instead of resending it forever", async (t) => {
  const { client, next } = scripted();
  t.after(() => client.close());
  const a = await next();
  const big = client.publish("chat:a", "big");
  const after = client.publish("chat:a", "after");
  a.drop(1009, "message too big");
  await assert.rejects(big, { code: "too_large" });
  const b = await next();
  assert.deepEqual(b.sent.map((f) => f.data), ["after"]);
  b.deliver({ type: "ack", id: b.sent[0].id });
  assert.deepEqual(await after, {});
});

test("a publish over maxMessageBytes is refused before it is sent", async (t) => {
  const { client } = scripted({ maxMessageBytes: 64 });
  t.after(() => client.close());
  await assert.rejects(client.publish("chat:a", "x".repeat(100)), { code: "too_large" });
});

test("a forbidden join forgets the room; an unavailable one is joined again on reconnect", async (t) => {
  const { client, next } = scripted();
  t.after(() => client.close());
  const errors = [];
  const a = await next();
  client.join("chat:no", { onError: (e) => errors.push(e.code) });
  client.join("chat:later");
  a.deliver({ type: "error", code: "forbidden", reason: "not allowed", id: a.sent[0].id });
  a.deliver({ type: "error", code: "unavailable", reason: "bus", id: a.sent[1].id });
  assert.deepEqual(errors, ["forbidden"]);
  a.drop();
  const b = await next();
  assert.deepEqual(b.sent.map((f) => f.room), ["chat:later"]);
});

test("the automatic user room is kept and resumed without being joined by the client first", async (t) => {
  const { client, next, events } = scripted();
  t.after(() => client.close());
  const got = [];
  client.on("message", (m) => got.push(m.room));
  const a = await next();
  a.deliver({ type: "joined", room: "user:alice", recovered: false, position: pos(1) });
  assert.equal(a.sent.length, 0, "no join sent for it");
  a.deliver(msg("user:alice", 2));
  a.drop();
  const b = await next();
  assert.deepEqual(b.sent[0].since, pos(2));
  // The gateway's own automatic join arrives before the answer to ours: ours decides.
  b.deliver({ type: "joined", room: "user:alice", recovered: false, position: pos(5) });
  b.deliver({ type: "joined", room: "user:alice", recovered: true, position: pos(2), id: b.sent[0].id });
  assert.deepEqual(got, ["user:alice"]);
  assert.equal(events.filter(([e]) => e == "gap").length, 0);
});

test("presence keeps a snapshot plus diffs", async (t) => {
  const { client, next } = scripted();
  t.after(() => client.close());
  const seen = [];
  const a = await next();
  const sub = client.join("chat:a", { onPresence: (e) => seen.push([e.event, e.members.map((m) => m.user)]) });
  const [join, req] = a.sent;
  assert.equal(req.type, "presence");
  a.deliver({ type: "joined", room: "chat:a", recovered: false, position: pos(1), id: join.id });
  const m = (conn, user) => ({ conn, user, info: null });
  a.deliver({ type: "presence", room: "chat:a", members: [m("c1", "alice"), m("c2", "bob")], id: req.id });
  await tick();
  a.deliver({ type: "presence", room: "chat:a", event: "leave", member: m("c1", "alice") });
  a.deliver({ type: "presence", room: "chat:a", event: "join", member: m("c3", "carol") });
  assert.deepEqual(seen, [
    ["snapshot", ["alice", "bob"]],
    ["leave", ["bob"]],
    ["join", ["bob", "carol"]],
  ]);
  assert.deepEqual(sub.members.map((x) => x.conn), ["c2", "c3"]);
});

test("a presence snapshot read before a join the client already saw does not drop that member", async (t) => {
  // Cross-pod, the live join can overtake the presence store the snapshot is read from.
  const { client, next } = scripted();
  t.after(() => client.close());
  const seen = [];
  const a = await next();
  const sub = client.join("chat:a", { onPresence: (e) => seen.push([e.event, e.members.map((m) => m.user).sort()]) });
  const [join, req] = a.sent;
  a.deliver({ type: "joined", room: "chat:a", recovered: false, position: pos(1), id: join.id });
  const m = (conn, user) => ({ conn, user, info: null });
  a.deliver({ type: "presence", room: "chat:a", event: "join", member: m("c1", "alice") });
  a.deliver({ type: "presence", room: "chat:a", event: "leave", member: m("c9", "zed") });
  a.deliver({ type: "presence", room: "chat:a", members: [m("c2", "bob"), m("c9", "zed")], id: req.id });
  await tick();
  a.deliver({ type: "presence", room: "chat:a", event: "join", member: m("c3", "carol") });
  assert.deepEqual(seen.at(-2), ["snapshot", ["alice", "bob"]]);
  assert.deepEqual(seen.at(-1), ["join", ["alice", "bob", "carol"]]);
  assert.deepEqual(sub.members.map((x) => x.conn).sort(), ["c1", "c2", "c3"]);
});

test("a handshake that reports only an error (Node 20's WebSocket) still counts as a failed attempt", async (t) => {
  const { client, events } = scripted();
  t.after(() => client.close());
  for (let i = 0; i < 500 && !ScriptedSocket.all.length; i++) await tick(1);
  ScriptedSocket.all[0].onerror?.({});
  const { next } = { next: async () => {
    for (let i = 0; i < 500 && ScriptedSocket.all.length < 2; i++) await tick(1);
    return ScriptedSocket.all[1];
  } };
  assert.ok(await next(), "tried again");
  assert.deepEqual(
    events.filter(([e]) => e == "error").map(([, v]) => v.code),
    ["connect"],
  );
  assert.equal(events.filter(([e]) => e == "disconnected").length, 0, "it never connected");
});

test("read() marks the last processed position, receipts and read state reach the room's handlers", async (t) => {
  const { client, next } = scripted();
  t.after(() => client.close());
  const receipts = [];
  const joins = [];
  const a = await next();
  const sub = client.join("chat:a", { onReceipt: (r) => receipts.push(r), onJoined: (j) => joins.push(j) });
  a.deliver({ type: "joined", room: "chat:a", recovered: false, position: pos(3), read: pos(2), unread: 1, id: a.sent[0].id });
  assert.deepEqual(joins[0], { recovered: false, resumed: false, position: pos(3), read: pos(2), unread: 1 });
  a.deliver(msg("chat:a", 7));
  const marked = sub.read();
  const req = a.sent.at(-1);
  assert.deepEqual(req, { type: "read", room: "chat:a", position: pos(7), id: req.id });
  a.deliver({ type: "ack", seq: 7, epoch: "e1", id: req.id });
  assert.deepEqual(await marked, pos(7));
  a.deliver({ type: "receipt", room: "chat:a", user: "bob", position: pos(7) });
  assert.deepEqual(receipts, [{ room: "chat:a", user: "bob", position: pos(7) }]);
});

test("a batch is handled as its messages one by one, in seq order, duplicates dropped", async (t) => {
  const { client, next } = scripted();
  t.after(() => client.close());
  const got = [];
  const a = await next();
  const sub = client.join("user:u", { onMessage: (m) => got.push([m.seq, m.data.type]) });
  a.deliver({ type: "joined", room: "user:u", recovered: false, position: pos(3), id: a.sent[0].id });
  a.deliver(msg("user:u", 4, { type: "like" }));
  a.deliver({
    type: "batch",
    room: "user:u",
    groups: [
      { key: "like", messages: [msg("user:u", 4, { type: "like" }), msg("user:u", 6, { type: "like" })] },
      { key: "comment", messages: [msg("user:u", 5, { type: "comment" })] },
    ],
  });
  assert.deepEqual(got, [
    [4, "like"],
    [5, "comment"],
    [6, "like"],
  ]);
  assert.deepEqual(sub.position, pos(6));
});

/** The `n`th socket the client opened (waiting for it), without opening it. */
async function socket(n) {
  for (let i = 0; i < 1000 && ScriptedSocket.all.length <= n; i++) await tick(1);
  return ScriptedSocket.all[n];
}

/** Fail the first two WebSocket attempts (a draining pod), wait for the client on SSE. */
async function fallBackToSse(client) {
  (await socket(0)).drop(1006);
  (await socket(1)).drop(1006);
  for (let i = 0; i < 1000 && client.transport != "sse"; i++) await tick(1);
  assert.equal(client.transport, "sse");
}

/** A fetch whose SSE response stays open until the request is aborted. */
function openStream() {
  const requests = [];
  const fetch = (url, init) => {
    const req = { url: String(url), aborted: false };
    requests.push(req);
    const body = new ReadableStream({
      start(ctl) {
        init.signal.addEventListener("abort", () => {
          req.aborted = true;
          ctl.error(new DOMException("aborted", "AbortError"));
        });
      },
    });
    return Promise.resolve({ status: 200, body, headers: new Headers() });
  };
  return { fetch, requests };
}

test("a client that fell back to SSE during an outage goes back to the WebSocket without a reconnect", async (t) => {
  const { fetch, requests } = openStream();
  const { client, events } = scripted({ transports: ["websocket", "sse"], fetch, upgradeProbeMs: 20 });
  t.after(() => client.close());
  client.join("chat:a");
  await fallBackToSse(client);
  // The gateway is back and nothing ends the stream: a WebSocket probe opens and is adopted.
  const probe = await socket(2);
  assert.ok(probe, "the client tried the WebSocket again while on SSE");
  probe.open();
  assert.equal(client.transport, "websocket");
  assert.equal(requests.length, 1);
  assert.ok(requests[0].aborted, "the SSE stream was ended");
  assert.deepEqual(probe.sent.map((f) => [f.type, f.room]), [["join", "chat:a"]]);
  assert.deepEqual(
    events.filter(([e]) => e == "connected").map(([, v]) => v.transport),
    ["sse", "websocket"],
  );
  await tick(30);
  assert.equal(ScriptedSocket.all.length, 3, "no further probes once on the WebSocket");
});

test("a WebSocket probe refused while on SSE keeps the stream and backs off", async (t) => {
  const { fetch, requests } = openStream();
  const { client, events } = scripted({ transports: ["websocket", "sse"], fetch, upgradeProbeMs: 10, backoffCapMs: 40 });
  t.after(() => client.close());
  client.join("chat:a");
  await fallBackToSse(client);
  for (let n = 2; n < 5; n++) (await socket(n)).drop(1006);
  assert.equal(client.transport, "sse");
  // 10 ms after connecting, then 20 and 40 (the cap) after each refusal.
  const [p1, p2, p3] = ScriptedSocket.all.slice(2, 5).map((s) => s.at);
  assert.ok(p2 - p1 >= 18, `second probe ${p2 - p1} ms after the first`);
  assert.ok(p3 - p2 >= 38, `third probe ${p3 - p2} ms after the second`);
  assert.equal(requests.length, 1, "refused probes never touched the stream");
  assert.ok(!requests[0].aborted);
  assert.equal(events.filter(([e]) => e == "disconnected").length, 0);
  client.close();
  const n = ScriptedSocket.all.length;
  await tick(100);
  assert.equal(ScriptedSocket.all.length, n, "no probe after close");
});

// --- token refresh against the backoff and a skewed clock (Node's mock timers, no real waiting) ---

/** An unsigned JWT with these claims (the client reads, never verifies, them). */
const jwt = (claims) => `h.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.s`;
const flush = () => new Promise((r) => setImmediate(r));

/** Advance the mocked clock `ms` in `step` ms steps; `onSocket` sees each new socket. */
async function run(t, ms, onSocket, step = 10) {
  let seen = ScriptedSocket.all.length;
  for (let i = 0; i < ms / step; i++) {
    t.mock.timers.tick(step);
    await flush();
    while (seen < ScriptedSocket.all.length) onSocket(ScriptedSocket.all[seen++]);
  }
}

test("a token that looks expired here never shortcuts the backoff: each attempt waits its delay", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_700_000_000_000 });
  t.mock.method(Math, "random", () => 0.9);
  let calls = 0;
  const { client, events } = scripted({
    backoffBaseMs: 2000,
    backoffCapMs: 30000,
    getToken: () => {
      calls++;
      const now = Math.floor(Date.now() / 1000);
      return jwt({ sub: "u", iat: now - 1000, exp: now - 100 });
    },
  });
  t.after(() => client.close());
  // The gateway refuses every handshake (401 token_invalid): the socket closes before opening.
  await run(t, 60000, (ws) => ws.drop(1006, ""));
  const delays = events.filter(([e]) => e == "reconnecting").map(([, v]) => v.delayMs);
  const at = ScriptedSocket.all.map((s) => s.at);
  assert.deepEqual(delays.slice(0, 5), [1800, 3600, 7200, 14400, 27000]);
  for (let i = 1; i < at.length; i++)
    assert.ok(at[i] - at[i - 1] >= delays[i - 1], `attempt ${i + 1} came ${at[i] - at[i - 1]} ms after the one before, its backoff was ${delays[i - 1]} ms`);
  assert.equal(at.length, 6, "1 + 5 attempts in 60 s (after 1.8 + 3.6 + 7.2 + 14.4 + 27 = 54 s)");
  assert.equal(calls, 6, "getToken once per attempt");
});

for (const [skewMs, label] of [
  [600_000, "10 minutes fast"],
  [299_500, "fast by all but half a second of the token's lifetime"],
]) {
  test(`a client clock ${label} keeps one healthy connection and refreshes at a sane interval`, async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_700_000_000_000 + skewMs });
    // Tokens issued by the server's clock, valid there for 5 minutes.
    const { client, events } = scripted({
      getToken: () => {
        const now = Math.floor((Date.now() - skewMs) / 1000);
        return jwt({ sub: "u", iat: now, exp: now + 300 });
      },
    });
    t.after(() => client.close());
    client.join("chat:a");
    await run(t, 10000, (ws) => ws.open());
    assert.equal(ScriptedSocket.all.length, 1, "one connection in 10 s");
    assert.equal(events.filter(([e]) => e == "disconnected").length, 0, "never cut");
    // Over the token's lifetime it is refreshed, before the server's exp, and not in a loop.
    await run(t, 280000, (ws) => ws.open());
    const cuts = events.filter(([e]) => e == "disconnected").map(([, v]) => v);
    assert.ok(cuts.length >= 1, "refreshed before the gateway's exp");
    assert.ok(cuts.length <= 290 / 30, `${cuts.length} refreshes in 290 s: at most one per 30 s`);
    assert.ok(cuts.every((c) => c.code == 1000 && c.reason == "token refresh"));
  });
}

test("a token without iat that looks expired here is used as is: no refresh loop", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_700_000_600_000 });
  let calls = 0;
  const { client, events } = scripted({
    getToken: () => {
      calls++;
      return jwt({ sub: "u", exp: Math.floor((Date.now() - 600_000) / 1000) + 300 });
    },
  });
  t.after(() => client.close());
  client.join("chat:a");
  await run(t, 60000, (ws) => ws.open());
  assert.equal(ScriptedSocket.all.length, 1);
  assert.equal(calls, 1);
  assert.equal(events.filter(([e]) => e == "disconnected").length, 0);
});

test("a refresh that gets the same token back keeps the connection", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_700_000_000_000 });
  const now = Math.floor(Date.now() / 1000);
  const token = jwt({ sub: "u", iat: now, exp: now + 120 });
  let calls = 0;
  const { client, events } = scripted({
    getToken: () => {
      calls++;
      return token;
    },
  });
  t.after(() => client.close());
  await run(t, 119000, (ws) => ws.open());
  assert.ok(calls >= 2, "asked for a new token before exp");
  assert.ok(calls <= 4, `${calls} getToken calls in 119 s`);
  assert.equal(ScriptedSocket.all.length, 1, "the same token: the connection is kept");
  assert.equal(events.filter(([e]) => e == "disconnected").length, 0);
});

test("a refresh timer never fires into a pending backoff", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_700_000_000_000 });
  t.mock.method(Math, "random", () => 0.99);
  let n = 0;
  const { client, events } = scripted({
    backoffBaseMs: 20000,
    backoffCapMs: 60000,
    getToken: () => {
      const now = Math.floor(Date.now() / 1000);
      return jwt({ sub: "u", n: ++n, iat: now, exp: now + 10 });
    },
  });
  t.after(() => client.close());
  // Connected with a 10 s token (refresh due at 5 s), dropped at once: the backoff is 19.8 s.
  let first = true;
  await run(t, 15000, (ws) => {
    if (first) {
      first = false;
      ws.open();
      ws.drop(1006, "");
    } else ws.open();
  });
  assert.equal(ScriptedSocket.all.length, 1, "no attempt before the backoff's 19.8 s");
  await run(t, 5000, (ws) => ws.open());
  assert.equal(ScriptedSocket.all.length, 2);
  assert.ok(ScriptedSocket.all[1].at - ScriptedSocket.all[0].at >= 19800);
  assert.deepEqual(events.filter(([e]) => e == "reconnecting").map(([, v]) => v.delayMs), [19800]);
});

test("a 20 s token without iat is refreshed halfway through, before its exp, every time", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_700_000_000_000 });
  const exps = [];
  const { client, events } = scripted({
    getToken: () => {
      exps.push(Math.floor(Date.now() / 1000) + 20);
      return jwt({ sub: "u", n: exps.length, exp: exps.at(-1) });
    },
  });
  t.after(() => client.close());
  client.join("chat:a");
  await run(t, 60000, (ws) => ws.open());
  const at = ScriptedSocket.all.map((s) => s.at);
  const cuts = events.filter(([e]) => e == "disconnected").map(([, v]) => v);
  assert.ok(cuts.every((c) => c.code == 1000 && c.reason == "token refresh"));
  assert.ok(at.length >= 6 && at.length <= 7, `${at.length} connections in 60 s: one per ~10 s`);
  for (let i = 1; i < at.length; i++) {
    assert.ok(at[i] < exps[i - 1] * 1000, `connection ${i} replaced ${at[i] - exps[i - 1] * 1000} ms after its exp`);
    assert.ok(at[i] - at[i - 1] >= 9000, "not in a loop");
  }
});

for (const skewMs of [250_000, 280_000]) {
  test(`a client clock ${skewMs / 1000} s fast with 5 min iat tokens refreshes once per lifetime, not every 30 s`, async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_700_000_000_000 + skewMs });
    const exps = [];
    const { client, events } = scripted({
      getToken: () => {
        const now = Math.floor((Date.now() - skewMs) / 1000);
        exps.push(now + 300);
        return jwt({ sub: "u", iat: now, exp: now + 300 });
      },
    });
    t.after(() => client.close());
    client.join("chat:a");
    await run(t, 1_200_000, (ws) => ws.open(), 100);
    const at = ScriptedSocket.all.map((s) => s.at - skewMs); // the issuer's clock
    const cuts = events.filter(([e]) => e == "disconnected").map(([, v]) => v);
    assert.ok(cuts.every((c) => c.code == 1000 && c.reason == "token refresh"));
    // The first refresh comes early (one token cannot tell a fast clock from a cached token);
    // from the second token on the skew is known: one refresh per ~270 s.
    assert.ok(cuts.length >= 4 && cuts.length <= 6, `${cuts.length} refreshes in 20 min`);
    for (let i = 1; i < at.length; i++) assert.ok(at[i] < exps[i - 1] * 1000, `connection ${i} outlived its token`);
    for (let i = 2; i < at.length; i++) assert.ok(at[i] - at[i - 1] >= 260_000, `refresh ${i} after ${at[i] - at[i - 1]} ms`);
  });
}

test("a token reused from a cache is refreshed before its real exp, not a lifetime after it came", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_700_000_000_000 });
  const exps = [];
  let calls = 0;
  const { client, events } = scripted({
    getToken: () => {
      // The first one was issued 4 of its 5 minutes ago (an app's token cache); then fresh ones.
      const iat = Math.floor(Date.now() / 1000) - (calls++ ? 0 : 240);
      exps.push(iat + 300);
      return jwt({ sub: "u", iat, exp: iat + 300 });
    },
  });
  t.after(() => client.close());
  client.join("chat:a");
  await run(t, 900_000, (ws) => ws.open(), 100);
  const at = ScriptedSocket.all.map((s) => s.at);
  assert.ok(events.filter(([e]) => e == "disconnected").every(([, c]) => c.reason == "token refresh"));
  assert.ok(at.length >= 4, `${at.length} connections in 15 min`);
  for (let i = 1; i < at.length; i++) assert.ok(at[i] < exps[i - 1] * 1000, `connection ${i} outlived its token`);
  assert.ok(at[1] - at[0] <= 31_000, "the cached token replaced 30 s before its exp");
});

test("a token that lives longer than a timer can wait (24.8 days) does not refresh in a loop", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_700_000_000_000 });
  const now = Math.floor(Date.now() / 1000);
  const token = jwt({ sub: "svc", iat: now, exp: now + 365 * 86400 });
  let calls = 0;
  const { client, events } = scripted({
    getToken: () => {
      calls++;
      return token;
    },
  });
  t.after(() => client.close());
  await run(t, 10000, (ws) => ws.open());
  assert.equal(calls, 1, "getToken once, not on every 1 ms overflowed timer");
  assert.equal(ScriptedSocket.all.length, 1);
  assert.equal(events.filter(([e]) => e == "disconnected").length, 0);
});
