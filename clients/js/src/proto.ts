// The binary encoding of room protocol v1 (WebSocket subprotocol `switchboard.v1.proto`,
// docs/protocol.md#websocket-the-binary-protocol-protocol-buffers): a hand-written protobuf
// codec for exactly the messages of gateway/proto/switchboard/v1/rooms.proto, no dependency.
// It translates to and from the same frames as the JSON codec, so the client and the app see
// the same messages whatever the encoding. An entry point of its own
// (`@switchboard/client/proto`): apps that stay on JSON do not carry it.
//
//   import { protoCodec } from "@switchboard/client/proto";
//   new SwitchboardClient({ url, getToken, codec: protoCodec });

import type { Codec, Frame, Position } from "./protocol.js";

// --- writing -------------------------------------------------------------------------------

type Out = number[];
const utf8 = new TextEncoder();
const text = new TextDecoder();

/** A varint; exact for integers up to 2^53 (seqs, timestamps). */
function varint(o: Out, n: number): void {
  while (n > 127) {
    o.push((n % 128) | 128);
    n = Math.floor(n / 128);
  }
  o.push(n);
}

/** A length-delimited field (strings, bytes, nested messages). */
function bytes(o: Out, field: number, b: Uint8Array | Out): void {
  varint(o, (field << 3) | 2);
  varint(o, b.length);
  for (let i = 0; i < b.length; i++) o.push(b[i]);
}

function str(o: Out, field: number, s: string | undefined): void {
  if (s) bytes(o, field, utf8.encode(s));
}

function uint(o: Out, field: number, n: number | boolean | undefined): void {
  if (n) {
    varint(o, field << 3);
    varint(o, +n);
  }
}

function position(p: Position): Out {
  const o: Out = [];
  uint(o, 1, p.seq);
  str(o, 2, p.epoch);
  return o;
}

function fromB64(s: string): Uint8Array {
  const bin = atob(s);
  const b = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) b[i] = bin.charCodeAt(i);
  return b;
}

/** A client frame (`join`, `leave`, `publish`, `presence`, `ping`, `read`) as a `ClientMessage`. */
function encode(f: Frame): Uint8Array {
  const o: Out = [];
  if (f.id != null) bytes(o, 1, utf8.encode(f.id));
  const m: Out = [];
  str(m, 1, f.room);
  let kind = 6; // ping
  if (f.type == "join") {
    kind = 2;
    if (f.since) bytes(m, 2, position(f.since));
  } else if (f.type == "leave") kind = 3;
  else if (f.type == "publish") {
    kind = 4;
    if (f.b64 != null) bytes(m, 3, fromB64(f.b64));
    else bytes(m, 2, utf8.encode(JSON.stringify(f.data ?? null)));
    uint(m, 4, f.ephemeral);
  } else if (f.type == "presence") kind = 5;
  else if (f.type == "read") {
    kind = 7;
    bytes(m, 2, position(f.position));
  }
  else if (f.type != "ping") throw new Error(`no protobuf encoding for a ${f.type} frame`);
  bytes(o, kind, m);
  return new Uint8Array(o);
}

// --- reading -------------------------------------------------------------------------------

/** A message's fields by number, each with every value it had (varints as numbers). */
type Fields = Map<number, (number | Uint8Array)[]>;

/** Splits one message into its fields; throws on truncated or malformed input. */
function fields(b: Uint8Array): Fields {
  const out: Fields = new Map();
  let i = 0;
  const vint = () => {
    let n = 0;
    for (let mul = 1; ; mul *= 128) {
      if (i >= b.length || mul > 2 ** 63) throw new Error("bad varint");
      const c = b[i++];
      n += (c & 127) * mul;
      if (c < 128) return n;
    }
  };
  while (i < b.length) {
    const tag = vint();
    const wire = tag % 8;
    const no = Math.floor(tag / 8);
    let v: number | Uint8Array;
    if (wire == 0) v = vint();
    else if (wire == 2) {
      const len = vint();
      if (i + len > b.length) throw new Error("truncated");
      v = b.subarray(i, (i += len));
    } else if (wire == 1 || wire == 5) {
      i += wire == 1 ? 8 : 4;
      continue;
    } else throw new Error("bad wire type");
    const list = out.get(no);
    if (list) list.push(v);
    else out.set(no, [v]);
  }
  if (i > b.length) throw new Error("truncated");
  return out;
}

const last = (f: Fields, no: number) => f.get(no)?.at(-1);
const num = (f: Fields, no: number) => {
  const v = last(f, no);
  return typeof v == "number" ? v : 0;
};
const raw = (f: Fields, no: number) => {
  const v = last(f, no);
  return v instanceof Uint8Array ? v : undefined;
};
const sub = (f: Fields, no: number) => fields(raw(f, no) ?? new Uint8Array());
const string = (f: Fields, no: number) => {
  const v = raw(f, no);
  return v ? text.decode(v) : "";
};
const pos = (f: Fields, no: number): Position | undefined => {
  if (!raw(f, no)) return undefined;
  const p = sub(f, no);
  return { seq: num(p, 1), epoch: string(p, 2) };
};

function toB64(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode(...b.subarray(i, i + 0x8000));
  return btoa(s);
}

function member(b: Uint8Array) {
  const m = fields(b);
  const info = raw(m, 3);
  return { conn: string(m, 1), user: m.has(2) ? string(m, 2) : null, info: info?.length ? JSON.parse(text.decode(info)) : null };
}

const KINDS = ["message", "joined", "left", "ack", "error", "presence", "pong", "shutdown", "lost", "receipt", "batch"];

/** A `RoomMessage` as the `message` frame. */
function roomMessage(m: Fields, f: Frame): Frame {
  f.room = string(m, 1);
  f.seq = num(m, 2);
  f.epoch = string(m, 3);
  f.ts = num(m, 4);
  if (raw(m, 5)) f.from = { sub: string(sub(m, 5), 1) };
  if (num(m, 6)) f.ephemeral = true;
  const j = raw(m, 7);
  const bin = raw(m, 8);
  if (bin) f.b64 = toB64(bin);
  else if (j) f.data = JSON.parse(text.decode(j));
  else f.data = string(m, 9);
  return f;
}

/** A `ServerMessage` as the frame the JSON encoding would have carried. */
function decode(b: Uint8Array): Frame | undefined {
  const env = fields(b);
  let kind = 0;
  for (let k = 2; k <= 12; k++) if (raw(env, k)) kind = k;
  const type = KINDS[kind - 2];
  if (!type) return undefined;
  const m = sub(env, kind);
  const f: Frame = { type };
  if (env.has(1)) f.id = string(env, 1);
  // `room` is field 1 of message, joined, left, presence, lost, receipt and batch.
  if ([2, 3, 4, 7, 10, 11, 12].includes(kind)) f.room = string(m, 1);
  switch (type) {
    case "message":
      roomMessage(m, f);
      break;
    case "joined":
      f.recovered = !!num(m, 2);
      f.position = pos(m, 3) ?? { seq: 0, epoch: "" };
      if (m.has(5)) {
        f.read = pos(m, 4) ?? null;
        f.unread = num(m, 5);
      }
      break;
    case "receipt":
      f.user = string(m, 2);
      f.position = pos(m, 3) ?? { seq: 0, epoch: "" };
      break;
    case "batch":
      f.groups = (m.get(2) ?? []).map((g) => {
        const gf = fields(g as Uint8Array);
        return {
          key: gf.has(1) ? string(gf, 1) : null,
          messages: (gf.get(2) ?? []).map((x) => roomMessage(fields(x as Uint8Array), { type: "message" })),
        };
      });
      break;
    case "ack": {
      const p = pos(m, 1);
      if (p) Object.assign(f, p);
      break;
    }
    case "error":
      f.code = string(m, 1);
      f.reason = string(m, 2);
      break;
    case "presence": {
      const event = string(m, 2);
      const members = (m.get(4) ?? []).map((v) => member(v as Uint8Array));
      if (event) {
        f.event = event;
        f.member = member(raw(m, 3) ?? new Uint8Array());
      } else f.members = members;
      break;
    }
    case "shutdown":
      f.reconnectAfterMs = num(m, 1);
      break;
    case "lost": {
      const from = pos(m, 2);
      const to = pos(m, 3);
      if (from) f.from = from;
      if (to) f.to = to;
      f.ephemeral = num(m, 4);
    }
  }
  return f;
}

/** The protobuf codec: pass it as the client's `codec` option. */
export const protoCodec: Codec = {
  subprotocol: "switchboard.v1.proto",
  encode,
  decode(data) {
    if (typeof data == "string") return undefined;
    try {
      return decode(data instanceof Uint8Array ? data : new Uint8Array(data));
    } catch {
      return undefined;
    }
  },
};
