// The protobuf codec (src/proto.ts) against protobufjs loaded from the committed schema
// (gateway/proto/switchboard/v1/rooms.proto): every client message kind the codec writes is
// read back by protobufjs, every server message kind protobufjs writes is read by the codec
// into the frame the JSON encoding carries. protobufjs is e2e/proto's (scripts/setup.sh).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { protoCodec } from "../../dist/proto.js";

const root = fileURLToPath(new URL("../../../../", import.meta.url));
const protobuf = createRequire(root + "e2e/proto/package.json")("protobufjs");
const schema = protobuf.loadSync(root + "gateway/proto/switchboard/v1/rooms.proto");
const ClientMessage = schema.lookupType("switchboard.v1.ClientMessage");
const ServerMessage = schema.lookupType("switchboard.v1.ServerMessage");
const utf8 = (s) => Buffer.from(s, "utf8");

/** What protobufjs reads from the codec's bytes, as plain JSON-able values. */
function readClient(frame) {
  const bytes = protoCodec.encode(frame);
  assert.ok(bytes instanceof Uint8Array);
  const m = ClientMessage.decode(bytes);
  const o = ClientMessage.toObject(m, { longs: Number, bytes: Array, oneofs: true });
  delete o._id; // the synthetic oneof of `optional string id`
  return o;
}

test("every client message kind reads back in protobufjs as the frame that was encoded", () => {
  assert.deepEqual(readClient({ type: "join", room: "chat:lobby", id: "j1" }), {
    id: "j1",
    kind: "join",
    join: { room: "chat:lobby" },
  });
  assert.deepEqual(readClient({ type: "join", room: "chat:lobby", since: { seq: 2 ** 40 + 3, epoch: "mem-5f1c" } }), {
    kind: "join",
    join: { room: "chat:lobby", since: { seq: 2 ** 40 + 3, epoch: "mem-5f1c" } },
  });
  assert.deepEqual(readClient({ type: "leave", room: "chat:x", id: "3" }), { id: "3", kind: "leave", leave: { room: "chat:x" } });
  assert.deepEqual(readClient({ type: "presence", room: "chat:x", id: "r2" }), {
    id: "r2",
    kind: "presence",
    presence: { room: "chat:x" },
  });
  assert.deepEqual(readClient({ type: "ping", id: "7" }), { id: "7", kind: "ping", ping: {} });
});

test("publishes carry json text or binary bytes, never base64, and the ephemeral flag", () => {
  const data = { text: "héllo ✓", n: [1, 2.5, null] };
  assert.deepEqual(readClient({ type: "publish", room: "chat:lobby", id: "p1", data }), {
    id: "p1",
    kind: "publish",
    publish: { room: "chat:lobby", payload: "json", json: [...utf8(JSON.stringify(data))] },
  });
  const bin = Buffer.from([0, 1, 2, 255, 128]);
  assert.deepEqual(readClient({ type: "publish", room: "files:1", b64: bin.toString("base64"), ephemeral: true }), {
    kind: "publish",
    publish: { room: "files:1", payload: "binary", binary: [...bin], ephemeral: true },
  });
  // A payload of 300 bytes needs a two-byte length varint.
  const big = Buffer.alloc(300, 7);
  assert.deepEqual(readClient({ type: "publish", room: "r", b64: big.toString("base64") }).publish.binary, [...big]);
});

test("the documented publish encodes to the documented 27 bytes", () => {
  const bytes = protoCodec.encode({ type: "publish", room: "chat:lobby", data: { hi: 1 }, id: "1" });
  assert.equal(
    Buffer.from(bytes).toString("hex"),
    "0a013122160a0a636861743a6c6f62627912087b226869223a317d",
  );
});

/** What the codec reads from protobufjs's encoding of `msg` (a ServerMessage object). */
function readServer(msg) {
  const err = ServerMessage.verify(msg);
  assert.equal(err, null, err);
  const bytes = ServerMessage.encode(ServerMessage.fromObject(msg)).finish();
  // Sliced to a fresh ArrayBuffer: what a WebSocket hands over with binaryType "arraybuffer".
  return protoCodec.decode(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
}

test("every server message kind written by protobufjs reads as the JSON encoding's frame", () => {
  const pos = { seq: 45, epoch: "mem-5f1c" };
  assert.deepEqual(
    readServer({ message: { room: "chat:lobby", seq: 42, epoch: "mem-5f1c", ts: 1767225600123, from: { sub: "alice" }, json: utf8('{"text":"hi"}') } }),
    { type: "message", room: "chat:lobby", seq: 42, epoch: "mem-5f1c", ts: 1767225600123, from: { sub: "alice" }, data: { text: "hi" } },
  );
  assert.deepEqual(
    readServer({ message: { room: "files:1", seq: 7, epoch: "e", ts: 5, binary: Buffer.from([0, 1, 2, 255]) } }),
    { type: "message", room: "files:1", seq: 7, epoch: "e", ts: 5, b64: "AAEC/w==" },
  );
  assert.deepEqual(readServer({ message: { room: "raw:1", epoch: "e", ts: 5, ephemeral: true, text: "plain" } }), {
    type: "message",
    room: "raw:1",
    seq: 0,
    epoch: "e",
    ts: 5,
    ephemeral: true,
    data: "plain",
  });
  assert.deepEqual(readServer({ id: "2", joined: { room: "chat:lobby", recovered: true, position: pos } }), {
    type: "joined",
    id: "2",
    room: "chat:lobby",
    recovered: true,
    position: pos,
  });
  assert.deepEqual(readServer({ joined: { room: "u", position: { seq: 0, epoch: "e" } } }), {
    type: "joined",
    room: "u",
    recovered: false,
    position: { seq: 0, epoch: "e" },
  });
  assert.deepEqual(readServer({ id: "3", left: { room: "chat:x" } }), { type: "left", id: "3", room: "chat:x" });
  assert.deepEqual(readServer({ id: "4", ack: { position: { seq: 2 ** 50, epoch: "e" } } }), {
    type: "ack",
    id: "4",
    seq: 2 ** 50,
    epoch: "e",
  });
  assert.deepEqual(readServer({ id: "8", ack: {} }), { type: "ack", id: "8" });
  assert.deepEqual(readServer({ id: "1", error: { code: "forbidden", reason: "not allowed to join this room" } }), {
    type: "error",
    id: "1",
    code: "forbidden",
    reason: "not allowed to join this room",
  });
  assert.deepEqual(readServer({ id: "7", pong: {} }), { type: "pong", id: "7" });
  assert.deepEqual(readServer({ shutdown: { reconnectAfterMs: 2731 } }), { type: "shutdown", reconnectAfterMs: 2731 });
  assert.deepEqual(
    readServer({ lost: { room: "chat:lobby", from: { seq: 42, epoch: "e" }, to: { seq: 57, epoch: "e" } } }),
    { type: "lost", room: "chat:lobby", from: { seq: 42, epoch: "e" }, to: { seq: 57, epoch: "e" }, ephemeral: 0 },
  );
  assert.deepEqual(readServer({ lost: { room: "typing:7", ephemeral: 12 } }), { type: "lost", room: "typing:7", ephemeral: 12 });
});

test("read receipts and batches travel both ways as the JSON encoding's frames", () => {
  const pos = { seq: 45, epoch: "mem-5f1c" };
  assert.deepEqual(readClient({ type: "read", room: "chat:lobby", position: pos, id: "8" }), {
    id: "8",
    kind: "read",
    read: { room: "chat:lobby", position: pos },
  });
  assert.deepEqual(readServer({ receipt: { room: "chat:lobby", user: "alice", position: pos } }), {
    type: "receipt",
    room: "chat:lobby",
    user: "alice",
    position: pos,
  });
  assert.deepEqual(readServer({ joined: { room: "chat:lobby", recovered: true, position: pos, read: { seq: 40, epoch: "e" }, unread: 5 } }), {
    type: "joined",
    room: "chat:lobby",
    recovered: true,
    position: pos,
    read: { seq: 40, epoch: "e" },
    unread: 5,
  });
  assert.deepEqual(readServer({ joined: { room: "chat:lobby", position: pos, unread: 0 } }), {
    type: "joined",
    room: "chat:lobby",
    recovered: false,
    position: pos,
    read: null,
    unread: 0,
  });
  const msg = (seq, kind) => ({ room: "user:alice", seq, epoch: "e", ts: 5, json: utf8(JSON.stringify({ type: kind })) });
  const frame = (seq, kind) => ({ type: "message", room: "user:alice", seq, epoch: "e", ts: 5, data: { type: kind } });
  assert.deepEqual(
    readServer({ batch: { room: "user:alice", groups: [{ key: "like", messages: [msg(1, "like"), msg(3, "like")] }, { messages: [msg(2, "x")] }] } }),
    {
      type: "batch",
      room: "user:alice",
      groups: [
        { key: "like", messages: [frame(1, "like"), frame(3, "like")] },
        { key: null, messages: [frame(2, "x")] },
      ],
    },
  );
});

test("presence events and snapshots read as the JSON encoding's, user null when absent", () => {
  const alice = { conn: "8c1f02aa-17", user: "alice" };
  assert.deepEqual(readServer({ presence: { room: "chat:lobby", event: "join", member: alice } }), {
    type: "presence",
    room: "chat:lobby",
    event: "join",
    member: { ...alice, info: null },
  });
  assert.deepEqual(
    readServer({ id: "6", presence: { room: "chat:lobby", members: [alice, { conn: "c2", info: utf8('{"a":1}') }] } }),
    {
      type: "presence",
      id: "6",
      room: "chat:lobby",
      members: [
        { ...alice, info: null },
        { conn: "c2", user: null, info: { a: 1 } },
      ],
    },
  );
  assert.deepEqual(readServer({ id: "6", presence: { room: "chat:empty" } }), {
    type: "presence",
    id: "6",
    room: "chat:empty",
    members: [],
  });
});

test("text frames, truncated bytes and unknown kinds are not frames", () => {
  assert.equal(protoCodec.decode('{"type":"pong"}'), undefined);
  const ok = ServerMessage.encode(ServerMessage.fromObject({ id: "1", error: { code: "x", reason: "y" } })).finish();
  assert.equal(protoCodec.decode(ok.slice(0, ok.length - 1).buffer), undefined, "truncated");
  assert.equal(protoCodec.decode(new Uint8Array([0x0a, 0x05, 0x31]).buffer), undefined, "length past the end");
  assert.equal(protoCodec.decode(new Uint8Array([0x0a, 0x01, 0x31]).buffer), undefined, "an id and no kind");
  assert.equal(protoCodec.decode(new Uint8Array([0x6a, 0x00]).buffer), undefined, "kind field 13: unknown");
  assert.equal(protoCodec.decode(new Uint8Array([0x08, 0xff, 0xff]).buffer), undefined, "unterminated varint");
  assert.equal(protoCodec.decode(new Uint8Array([0x0f]).buffer), undefined, "wire type 7");
  assert.throws(() => protoCodec.encode({ type: "joined" }), /no protobuf encoding/);
});

test("a server message with fields this version does not know still reads (forward compatible)", () => {
  const known = ServerMessage.encode(ServerMessage.fromObject({ id: "7", pong: {} })).finish();
  // Field 15 varint, field 16 fixed64, field 17 fixed32, field 18 bytes: all skipped.
  const extra = [0x78, 0x96, 0x01, 0x81, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0x8d, 0x01, 1, 2, 3, 4, 0x92, 0x01, 0x02, 9, 9];
  assert.deepEqual(protoCodec.decode(new Uint8Array([...known, ...extra]).buffer), { type: "pong", id: "7" });
});
