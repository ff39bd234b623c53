// The pure parts of the room protocol v1 (docs/protocol.md): frame types, the codec interface,
// SSE parsing, the SSE cursor, reconnect delays, JWT expiry. No I/O here: unit-tested directly.

/** A room position: `seq` increases per room (not necessarily by one), `epoch` names the stream. */
export interface Position {
  seq: number;
  epoch: string;
}

/** A room message as delivered to the app. */
export interface RoomMessage {
  room: string;
  /** 0 for ephemeral messages (they have no position). */
  seq: number;
  epoch: string;
  /** Server time, milliseconds since the Unix epoch. */
  ts: number;
  /** The publisher's identity from its JWT; absent for the publish API and anonymous publishers. */
  from?: { sub: string } | null;
  /** The payload (JSON), or `b64` for binary payloads. */
  data?: unknown;
  b64?: string;
  ephemeral?: boolean;
}

/** A presence member: `conn` is a pod-unique connection id, `user` the token's `sub`. */
export interface Member {
  conn: string;
  user: string | null;
  info: unknown;
}

/** What resolves a `publish()`: the stored position, or nothing for ephemeral publishes. */
export interface Ack {
  seq?: number;
  epoch?: string;
}

/**
 * History the app did not get and will not get: it must reload the room from its own backend.
 * `not_recovered`: a resume (`since`) whose gap is gone, or from another epoch (`joined` with
 * `recovered: false`); `lost`: the pod fell behind and history could not repair it.
 */
export interface Gap {
  room: string;
  reason: "not_recovered" | "lost";
  /** lost: the first and last positions missed (absent when only ephemeral ones were). */
  from?: Position;
  to?: Position;
  /** lost: how many ephemeral messages were missed. */
  ephemeral?: number;
  /** not_recovered: where delivery continues from. */
  position?: Position;
}

/** Any frame; `type` says which (docs/protocol.md#websocket-the-json-protocol). */
export type Frame = { type: string; [k: string]: any };

/**
 * How frames travel on the WebSocket: the JSON codec (`switchboard.v1`, the default) or the
 * protobuf one (`switchboard.v1.proto`, `protoCodec` from `@switchboard/client/proto`). Both
 * translate to and from the same frames (the JSON encoding's objects).
 */
export interface Codec {
  /** The WebSocket subprotocol that selects this encoding. */
  subprotocol: string;
  encode(frame: Frame): string | Uint8Array;
  /** undefined for a frame it cannot read (ignored). */
  decode(data: string | ArrayBuffer): Frame | undefined;
}

export const jsonCodec: Codec = {
  subprotocol: "switchboard.v1",
  encode: (f) => JSON.stringify(f),
  decode(data) {
    if (typeof data != "string") return undefined;
    try {
      const v = JSON.parse(data);
      return v && typeof v == "object" && typeof v.type == "string" ? v : undefined;
    } catch {
      return undefined;
    }
  },
};

/** Full jitter: uniformly random in [0, min(cap, base·2^(attempt-1))); 0 for attempt 0. */
export function backoffDelay(attempt: number, baseMs: number, capMs: number, random = Math.random): number {
  if (attempt <= 0) return 0;
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt - 1, 30));
  return Math.floor(random() * ceiling);
}

function b64url(s: string): string {
  // Room names and epochs are ASCII (docs/protocol.md#rooms-authorization-and-the-user-room).
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** The SSE/long-poll cursor for these positions: base64url of `{"p":{"<room>":[seq,"epoch"]}}`. */
export function encodeCursor(positions: Iterable<[string, Position]>): string {
  const p: Record<string, [number, string]> = {};
  for (const [room, pos] of positions) p[room] = [pos.seq, pos.epoch];
  return b64url(JSON.stringify({ p }));
}

/** A numeric claim of a JWT (`exp`, `iat`: seconds), or undefined (not a JWT, no such claim). Not verified. */
export function jwtClaim(token: string, name: string): number | undefined {
  const part = token.split(".")[1];
  if (!part) return undefined;
  try {
    const v = JSON.parse(atob(part.replace(/-/g, "+").replace(/_/g, "/")))[name];
    return typeof v == "number" ? v : undefined;
  } catch {
    return undefined;
  }
}

/** The `exp` claim of a JWT in seconds, or undefined (not a JWT, no exp). Not verified. */
export const jwtExp = (token: string): number | undefined => jwtClaim(token, "exp");

/**
 * When to fetch a new token, in ms after `nowMs`, the time `getToken` returned it: `before` ms
 * ahead of expiry, or halfway through a token that lives less than twice that. The time left is
 * `exp` on the client's clock moved by `skewMs`, how far that clock is ahead of the issuer's
 * (learned from the tokens, 0: unknown). With `iat`, it is at most the lifetime `exp − iat`, and
 * a token that looks expired (the gateway took it: the clock is fast) is given its whole
 * lifetime; never sooner than `min(before, lifetime / 2)`, so a token that looks nearly expired
 * cannot cause a refresh loop. Without `iat` the lifetime is unknown: a token with less than 2 s
 * left looks expired and is not refreshed (undefined: the gateway closes with 4001 at `exp`, the
 * next attempt gets a new token). Never sooner than 1 s.
 */
export function refreshDelay(
  expSec: number,
  nowMs: number,
  beforeMs: number,
  iatSec?: number,
  skewMs = 0,
): number | undefined {
  const life = iatSec != null && expSec > iatSec ? (expSec - iatSec) * 1000 : 0;
  let ttl = expSec * 1000 - nowMs + skewMs;
  if (life) {
    if (ttl <= 0 || ttl > life) ttl = life;
  } else if (ttl < 2000) return undefined;
  return Math.max(1000, Math.min(beforeMs, life / 2), ttl > 2 * beforeMs ? ttl - beforeMs : ttl / 2);
}

/** One Server-Sent Event. */
export interface SseEvent {
  event: string;
  data: string;
  id?: string;
}

/**
 * An incremental `text/event-stream` parser (the WHATWG rules that matter here: CR, LF and
 * CRLF line ends, multi-line `data`, comments, `event`/`id`). Feed it decoded text chunks.
 */
export class SseParser {
  private buf = "";
  private data: string[] = [];
  private event = "";
  private id: string | undefined;
  private cr = false;

  constructor(private onEvent: (e: SseEvent) => void) {}

  feed(chunk: string): void {
    if (this.cr && chunk[0] == "\n") chunk = chunk.slice(1);
    this.cr = false;
    const text = this.buf + chunk;
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (c != "\n" && c != "\r") continue;
      this.line(text.slice(start, i));
      if (c == "\r") {
        if (i + 1 == text.length) this.cr = true;
        else if (text[i + 1] == "\n") i++;
      }
      start = i + 1;
    }
    this.buf = text.slice(start);
  }

  private line(l: string): void {
    if (l == "") {
      if (this.data.length) this.onEvent({ event: this.event || "message", data: this.data.join("\n"), id: this.id });
      this.data = [];
      this.event = "";
      return;
    }
    if (l[0] == ":") return;
    const colon = l.indexOf(":");
    const field = colon < 0 ? l : l.slice(0, colon);
    let value = colon < 0 ? "" : l.slice(colon + 1);
    if (value[0] == " ") value = value.slice(1);
    if (field == "data") this.data.push(value);
    else if (field == "event") this.event = value;
    else if (field == "id") this.id = value;
  }
}
