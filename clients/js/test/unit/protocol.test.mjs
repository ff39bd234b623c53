// The pure parts: reconnect delays, the SSE cursor and parser, JWT expiry, the JSON codec.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SseParser, backoffDelay, encodeCursor, jsonCodec, jwtExp, refreshDelay } from "../../dist/index.js";

test("backoff is zero on the first attempt and full jitter under the capped exponential after", () => {
  assert.equal(backoffDelay(0, 500, 30000, () => 0.99), 0);
  assert.equal(backoffDelay(1, 500, 30000, () => 0.999999), 499);
  assert.equal(backoffDelay(3, 500, 30000, () => 0.5), 1000);
  assert.equal(backoffDelay(40, 500, 30000, () => 0.5), 15000, "capped at 30 s");
  assert.equal(backoffDelay(5, 500, 30000, () => 0), 0, "full jitter reaches zero");
});

test("the cursor is base64url without padding of the documented JSON", () => {
  const c = encodeCursor([["chat:lobby", { seq: 4, epoch: "mem-5f1c" }]]);
  // The example cursor of docs/protocol.md#server-sent-events.
  assert.equal(c, "eyJwIjp7ImNoYXQ6bG9iYnkiOls0LCJtZW0tNWYxYyJdfX0");
  assert.doesNotMatch(encodeCursor([["a", { seq: 1, epoch: "e?>" }]]), /[+/=]/);
});

test("jwt exp is read from the payload and anything else is undefined", () => {
  const payload = Buffer.from(JSON.stringify({ sub: "a", exp: 1767225600 })).toString("base64url");
  assert.equal(jwtExp(`h.${payload}.s`), 1767225600);
  assert.equal(jwtExp("opaque-token"), undefined);
  assert.equal(jwtExp("h.!!!.s"), undefined);
  assert.equal(jwtExp(`h.${Buffer.from("{}").toString("base64url")}.s`), undefined);
});

test("a token is refreshed ahead of exp, halfway through a short one, never within a second", () => {
  const now = 1_000_000;
  const s = now / 1000;
  assert.equal(refreshDelay(s + 600, now, 30000, s), 570000);
  assert.equal(refreshDelay(s + 40, now, 30000, s), 20000);
  assert.equal(refreshDelay(s + 3, now, 30000, s), 1500, "a 3 s token halfway");
  assert.equal(refreshDelay(s + 1, now, 30000, s), 1000, "never within a second");
  assert.equal(refreshDelay(s + 600, now, 30000), 570000, "no iat: the clock is all there is");
});

test("the refresh delay does not trust the client's clock against the issuer's", () => {
  const now = 1_000_000;
  const s = now / 1000;
  // Clock 10 min fast, a 5 min token: it looks expired here but lives 5 min from now.
  assert.equal(refreshDelay(s - 300, now, 30000, s - 600), 270000);
  // Clock fast by all but a second of the lifetime: not sooner than min(before, lifetime / 2).
  assert.equal(refreshDelay(s + 1, now, 30000, s - 299), 30000);
  assert.equal(refreshDelay(s + 1, now, 30000, s - 9), 5000);
  // Clock 10 min slow: no more time left than the token's lifetime.
  assert.equal(refreshDelay(s + 900, now, 30000, s + 600), 270000);
  // No iat: a token that looks expired is not refreshed (the gateway's 4001 at exp, then the
  // backoff, take over); one that looks nearly expired not sooner than refreshBeforeExpMs.
  assert.equal(refreshDelay(s - 5, now, 30000), undefined);
  assert.equal(refreshDelay(s, now, 30000), undefined);
  assert.equal(refreshDelay(s + 1.5, now, 30000), undefined, "under 2 s left: looks expired, not refreshed");
});

test("a short token without iat is refreshed halfway through, as before, not after its exp", () => {
  const now = 1_000_000;
  const s = now / 1000;
  assert.equal(refreshDelay(s + 20, now, 30000), 10000, "a 20 s token at 10 s");
  assert.equal(refreshDelay(s + 59, now, 30000), 29500);
  assert.equal(refreshDelay(s + 61, now, 30000), 31000);
  assert.equal(refreshDelay(s + 2, now, 30000), 1000, "2 s left: at 1 s, the floor");
});

test("a skew learned from the tokens moves the client's clock to the issuer's", () => {
  const now = 1_000_000;
  const s = now / 1000;
  // Clock 250 s fast, a fresh 5 min token: 50 s left here, but the skew says its whole life.
  assert.equal(refreshDelay(s + 50, now, 30000, s - 250), 30000, "not known yet: not sooner than before");
  assert.equal(refreshDelay(s + 50, now, 30000, s - 250, 250000), 270000);
  // A token from a cache, 240 s old: the skew is not its age, refreshed before its real exp.
  assert.equal(refreshDelay(s + 60, now, 30000, s - 240, 0), 30000);
  assert.equal(refreshDelay(s + 60, now, 30000, s - 240, 1000), 31000, "a second of skew: a second later");
  // A skew never stretches a token past its lifetime, nor makes a no-iat token look expired.
  assert.equal(refreshDelay(s + 300, now, 30000, s, -600000), 270000);
  assert.equal(refreshDelay(s - 100, now, 30000, undefined, 120000), 10000);
});

test("the sse parser handles every line ending, split chunks, comments and multi-line data", () => {
  const got = [];
  const p = new SseParser((e) => got.push(e));
  p.feed("retry: 2000\n: connected\n\nevent: joined\nid: c1\r");
  p.feed("\ndata: {\"a\":1}\r\n\r\nda");
  p.feed("ta: x\ndata: y\r\rdata:z\n");
  assert.equal(got.length, 2);
  p.feed("\n");
  assert.deepEqual(got, [
    { event: "joined", data: '{"a":1}', id: "c1" },
    { event: "message", data: "x\ny", id: "c1" },
    { event: "message", data: "z", id: "c1" },
  ]);
});

test("the json codec reads objects with a type and ignores anything else", () => {
  assert.deepEqual(jsonCodec.decode('{"type":"pong","id":"1"}'), { type: "pong", id: "1" });
  assert.equal(jsonCodec.decode("not json"), undefined);
  assert.equal(jsonCodec.decode("[1]"), undefined);
  assert.equal(jsonCodec.decode(new ArrayBuffer(2)), undefined);
  assert.equal(jsonCodec.subprotocol, "switchboard.v1");
});
