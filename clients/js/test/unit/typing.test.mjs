// The typing helpers over a recording publisher, with Node's mock timers (no real waiting).
import { test } from "node:test";
import assert from "node:assert/strict";
import { typingIndicator, typingTracker } from "../../dist/typing.js";

function recorder() {
  const sent = [];
  return { sent, publish: async (room, data, opts) => void sent.push([room, data.typing, opts.ephemeral]) };
}

test("keystrokes publish typing once, again after resendMs, and stop after idleMs", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 0 });
  const pub = recorder();
  const ind = typingIndicator(pub, "chat:a", { idleMs: 3000, resendMs: 2000 });
  ind.keystroke();
  t.mock.timers.tick(500);
  ind.keystroke();
  t.mock.timers.tick(1000);
  ind.keystroke();
  assert.deepEqual(pub.sent, [["chat:a", true, true]], "debounced");
  t.mock.timers.tick(600);
  ind.keystroke(); // 2100 ms after the first: sent again for late joiners
  assert.equal(pub.sent.length, 2);
  t.mock.timers.tick(3000);
  assert.deepEqual(pub.sent.at(-1), ["chat:a", false, true], "idle: stopped");
  ind.stop();
  assert.equal(pub.sent.length, 3, "stop when not typing sends nothing");
});

test("stop() on send ends typing at once", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 0 });
  const pub = recorder();
  const ind = typingIndicator(pub, "chat:a");
  ind.keystroke();
  ind.stop();
  t.mock.timers.tick(10000);
  assert.deepEqual(pub.sent.map((s) => s[1]), [true, false]);
});

test("the tracker lists who is typing and drops them on false or after expireMs", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const seen = [];
  const tr = typingTracker((users) => seen.push(users), 5000);
  const m = (sub, typing, ephemeral = true) => ({ room: "chat:a", seq: 0, epoch: "e", ts: 0, from: { sub }, data: { typing }, ephemeral });
  tr.onMessage(m("bob", true));
  tr.onMessage(m("alice", true));
  tr.onMessage(m("bob", true)); // refresh, no change
  tr.onMessage(m("eve", true, false)); // stored messages are not typing signals
  tr.onMessage(m("alice", false));
  t.mock.timers.tick(5000);
  assert.deepEqual(seen, [["bob"], ["alice", "bob"], ["bob"], []]);
  tr.dispose();
});
