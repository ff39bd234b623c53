// The connection: WebSocket (or SSE + the app's HTTP publish), reconnect, resume, publish queue.
// The behaviour follows gateway/tests/support/room_client.rs, the reference client.

import {
  type Ack,
  type Codec,
  type Frame,
  type Gap,
  type Member,
  type Position,
  type RoomMessage,
  SseParser,
  backoffDelay,
  encodeCursor,
  jsonCodec,
  jwtClaim,
  jwtExp,
  refreshDelay,
} from "./protocol.js";

/** The longest `setTimeout` delay (2^31 − 1 ms); longer ones fire at once. */
const MAX_TIMER = 2 ** 31 - 1;

/** A refusal: the gateway's `error` code (`forbidden`, `rejected`, ...) or one of this client's. */
export class SwitchboardError extends Error {
  constructor(
    /** `forbidden`, `bad_request`, `not_joined`, `rejected`, `unavailable` from the gateway;
     * `queue_full`, `dropped`, `offline`, `too_large`, `closed`, `no_http_publish` from the client. */
    public code: string,
    message: string,
  ) {
    super(message || code);
    this.name = "SwitchboardError";
  }
}

export type Transport = "websocket" | "sse";

export interface ClientOptions {
  /** The rooms route, `wss://host/path` (or `https://`; each transport uses its own scheme). */
  url: string;
  /** Called before every connection attempt and before the token's `exp`. */
  getToken?: () => string | null | undefined | Promise<string | null | undefined>;
  /** WebSocket token carrier: a `bearer.<token>` subprotocol entry (default) or a query parameter. */
  tokenCarrier?: "subprotocol" | "query";
  /** SSE token carrier: a query parameter (default; no CORS preflight) or `Authorization`. */
  sseTokenCarrier?: "query" | "header";
  /** The query parameter of the route's `query` token source. Default `access_token`. */
  tokenQueryParam?: string;
  /** Allowed transports, in order of preference. Default `["websocket", "sse"]`. */
  transports?: Transport[];
  /** WebSocket attempts that fail before opening, in a row, before SSE is tried. Default 2. */
  fallbackAfter?: number;
  /** While on SSE, try the WebSocket again after this long (doubling after each refused try, up
   * to `backoffCapMs`) and move to it when it opens. Default 5 s; 0 turns probing off. */
  upgradeProbeMs?: number;
  /** Full-jitter backoff: `random(0, min(cap, base·2^n))`. Defaults 500 ms, 30 s. */
  backoffBaseMs?: number;
  backoffCapMs?: number;
  /** Give up on a connection attempt after this long. Default 10 s. */
  connectTimeoutMs?: number;
  /** Fetch a new token and reconnect this long before `exp` (half the lifetime of shorter
   * tokens), never sooner than `min(this, (exp − iat) / 2)` after it was obtained. Default 30 s. */
  refreshBeforeExpMs?: number;
  /** Publishes held while offline or unacknowledged. Default 1000. */
  queueLimit?: number;
  /** When full: reject the new publish (`fail`, default) or drop the oldest unsent one. */
  queueOverflow?: "fail" | "drop-oldest";
  /** Resend a publish refused as `unavailable` after this long. Default 1 s. */
  retryUnavailableMs?: number;
  /** The route's `limits.maxMessageBytes`: larger publishes are refused here. Default 1 MiB. */
  maxMessageBytes?: number;
  /** Publishing while on SSE (receive only): the app's own HTTP endpoint (it calls the publish API). */
  httpPublish?: (room: string, payload: { data?: unknown; b64?: string; ephemeral?: boolean }) => Promise<Ack>;
  /** The WebSocket encoding: JSON (`switchboard.v1`, default) or `protoCodec` from
   * `@switchboard/client/proto` (`switchboard.v1.proto`). SSE is always JSON. */
  codec?: Codec;
  /** Defaults to the global ones (Node 22+, browsers; Node 20: `--experimental-websocket` or `ws`). */
  WebSocket?: typeof WebSocket;
  fetch?: typeof fetch;
}

export interface JoinHandlers {
  onMessage?: (m: RoomMessage) => void;
  /** Snapshot on every (re)join, then diffs; `members` is the current list. Needs `rooms.presence`. */
  onPresence?: (e: { event: "snapshot" | "join" | "leave"; member?: Member; members: Member[] }) => void;
  /** Every `joined`: `resumed` when it carried `since`. In rooms with read receipts, `read`
   * (the user's read position, null: never) and `unread` (messages after it). */
  onJoined?: (j: { recovered: boolean; resumed: boolean; position: Position; read?: Position | null; unread?: number }) => void;
  /** Someone read the room up to `position` (rooms with read receipts; coalesced per interval). */
  onReceipt?: (r: Receipt) => void;
  /** History the app missed: reload the room. */
  onGap?: (g: Gap) => void;
  /** The join was refused (`forbidden`): the room is forgotten. */
  onError?: (e: SwitchboardError) => void;
}

export interface Subscription {
  readonly room: string;
  /** The last position processed, the resume point. */
  readonly position: Position | undefined;
  /** Presence as last known (snapshot + diffs). */
  readonly members: Member[];
  publish(data: unknown, opts?: PublishOptions): Promise<Ack>;
  presence(): Promise<Member[]>;
  /** Mark the room read up to `position` (default: the last message processed); resolves
   * with the read position the gateway stores. Needs `rooms.receipts` and a WebSocket. */
  read(position?: Position): Promise<Position>;
  leave(): void;
}

/** A read receipt: `user` read `room` up to `position`. */
export interface Receipt {
  room: string;
  user: string;
  position: Position;
}

export interface PublishOptions {
  /** Live only, never stored, never queued (typing). Rejected with `offline` when not connected. */
  ephemeral?: boolean;
}

export interface ClientEvents {
  connected: { transport: Transport; n: number };
  disconnected: { code: number; reason: string };
  reconnecting: { attempt: number; delayMs: number };
  shutdown: { reconnectAfterMs: number };
  message: RoomMessage;
  receipt: Receipt;
  gap: Gap;
  error: { code: string; reason: string; id?: string; status?: number };
}

interface RoomState {
  h: JoinHandlers;
  pos?: Position;
  /** The id of our unanswered join ("" on SSE) and whether it carried `since`. */
  pending?: [string, boolean];
  members: Map<string, Member>;
  /** Presence diffs that arrived while the snapshot request was on its way: applied again on
   * top of the snapshot, which may have been read before them (cross-pod, the live event can
   * overtake the presence store). Undefined when no snapshot is awaited. */
  early?: Array<[string, Member]>;
  sub: Subscription;
}

interface Pending {
  id: string;
  room: string;
  frame: Frame;
  ok: (a: Ack) => void;
  fail: (e: SwitchboardError) => void;
  sent?: boolean;
  timer?: ReturnType<typeof setTimeout>;
}

type Listener<T> = (e: T) => void;

export class SwitchboardClient {
  private o: Required<Omit<ClientOptions, "getToken" | "httpPublish" | "WebSocket" | "fetch">> & ClientOptions;
  private rooms = new Map<string, RoomState>();
  private queue: Pending[] = [];
  private waiting = new Map<string, (f: Frame) => void>();
  private ls: Record<string, Set<Listener<any>>> = {};
  private ws?: WebSocket;
  private sse?: AbortController;
  private live?: Transport;
  private gen = 0;
  private ids = 0;
  private conns = 0;
  private attempt = 0;
  private wsFails = 0;
  private notBefore = 0;
  private idle = false;
  private closed = false;
  private timer?: ReturnType<typeof setTimeout>;
  private refreshTimer?: ReturnType<typeof setTimeout>;
  /** The live connection's token. */
  private tok?: string | null;
  /** The last new token with `iat`, its age `at − iat` when it came, and the skew (`learn`). */
  private seen?: string;
  private age?: number;
  private skew = 0;
  private probeTimer?: ReturnType<typeof setTimeout>;
  private probeWs?: WebSocket;
  private probes = 0;

  constructor(opts: ClientOptions) {
    this.o = {
      tokenCarrier: "subprotocol",
      sseTokenCarrier: "query",
      tokenQueryParam: "access_token",
      transports: ["websocket", "sse"],
      fallbackAfter: 2,
      upgradeProbeMs: 5000,
      backoffBaseMs: 500,
      backoffCapMs: 30000,
      connectTimeoutMs: 10000,
      refreshBeforeExpMs: 30000,
      queueLimit: 1000,
      queueOverflow: "fail",
      retryUnavailableMs: 1000,
      maxMessageBytes: 1 << 20,
      codec: jsonCodec,
      ...opts,
    };
    this.timer = setTimeout(() => this.connect(), 0);
  }

  /** The transport in use, or undefined while disconnected. */
  get transport(): Transport | undefined {
    return this.live;
  }

  on<K extends keyof ClientEvents>(event: K, fn: Listener<ClientEvents[K]>): () => void {
    const set = (this.ls[event] ??= new Set());
    set.add(fn);
    return () => set.delete(fn);
  }

  private emit<K extends keyof ClientEvents>(event: K, e: ClientEvents[K]): void {
    for (const fn of this.ls[event] ?? []) fn(e);
  }

  /** Join `room` now and on every reconnect (resuming from the last position processed). */
  join(room: string, handlers: JoinHandlers = {}): Subscription {
    const known = this.rooms.get(room);
    if (known) {
      known.h = handlers;
      return known.sub;
    }
    const st = this.state(room, handlers);
    if (this.live == "websocket") this.sendJoin(room, st);
    else if (this.live == "sse" || this.idle) this.restart();
    return st.sub;
  }

  private state(room: string, handlers: JoinHandlers): RoomState {
    const st: RoomState = { h: handlers, members: new Map(), sub: undefined as unknown as Subscription };
    const self = this;
    st.sub = {
      room,
      get position() {
        return st.pos;
      },
      get members() {
        return [...st.members.values()];
      },
      publish: (data, opts) => this.publish(room, data, opts),
      presence: () => this.request({ type: "presence", room }).then((f) => f.members as Member[]),
      read: (position) => {
        const at = position ?? st.pos;
        if (!at) return Promise.reject(new SwitchboardError("no_position", "nothing to mark read yet"));
        return this.request({ type: "read", room, position: at }).then((f) => ({ seq: f.seq, epoch: f.epoch }));
      },
      leave() {
        self.leave(room);
      },
    };
    this.rooms.set(room, st);
    return st;
  }

  leave(room: string): void {
    if (!this.rooms.delete(room)) return;
    if (this.live == "websocket") this.send({ type: "leave", room });
    else if (this.live == "sse") this.restart();
  }

  /**
   * Publish to `room` (need not be joined). Resolves with the ack (the stored position),
   * rejects with the gateway's error. Queued while offline (bounded) and sent again after a
   * reconnect until acknowledged: at-least-once.
   */
  publish(room: string, data: unknown, opts: PublishOptions = {}): Promise<Ack> {
    return new Promise((ok, fail) => {
      const err = (code: string, msg: string) => fail(new SwitchboardError(code, msg));
      if (this.closed) return err("closed", "client closed");
      const payload: { data?: unknown; b64?: string; ephemeral?: boolean } =
        data instanceof Uint8Array ? { b64: toB64(data) } : { data };
      if (opts.ephemeral) payload.ephemeral = true;
      if (this.live == "sse") {
        if (!this.o.httpPublish) return err("no_http_publish", "on SSE (receive only) and no httpPublish option");
        return void this.o.httpPublish(room, payload).then(ok, (e) =>
          fail(e instanceof SwitchboardError ? e : new SwitchboardError("unavailable", String(e))),
        );
      }
      if (opts.ephemeral && this.live != "websocket") return err("offline", "ephemeral publish while disconnected");
      const id = "p" + ++this.ids;
      const frame: Frame = { type: "publish", room, id, ...payload };
      const size = this.o.codec.encode(frame).length;
      if (size > this.o.maxMessageBytes) return err("too_large", `publish of ${size} bytes over maxMessageBytes`);
      if (this.queue.length >= this.o.queueLimit) {
        const i = this.o.queueOverflow == "drop-oldest" ? this.queue.findIndex((p) => !p.sent) : -1;
        if (i < 0) return err("queue_full", `${this.queue.length} publishes queued (queueLimit)`);
        const [old] = this.queue.splice(i, 1);
        old.fail(new SwitchboardError("dropped", "dropped from a full queue for a newer publish"));
      }
      const p: Pending = { id, room, frame, ok, fail };
      this.queue.push(p);
      if (this.live == "websocket") this.sendPending(p);
    });
  }

  /** Stop for good: close the connection, reject what is queued. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.cut(1000, "client closed");
    clearTimeout(this.timer);
    clearTimeout(this.refreshTimer);
    this.endProbe();
    for (const p of this.queue.splice(0)) {
      clearTimeout(p.timer);
      p.fail(new SwitchboardError("closed", "client closed"));
    }
  }

  // --- connecting ----------------------------------------------------------------------------

  /** A connection attempt, with `token` obtained at `at` or a new one from `getToken`. */
  private async connect(token?: string | null, at = 0): Promise<void> {
    if (this.closed) return;
    const gen = ++this.gen;
    this.idle = false;
    if (token === undefined) {
      try {
        token = this.o.getToken ? await this.o.getToken() : null;
        this.learn(token, (at = Date.now()));
      } catch (e) {
        this.emit("error", { code: "token", reason: String(e) });
        return this.retry(gen);
      }
    }
    if (gen != this.gen || this.closed) return;
    const t = this.o.transports;
    const WS = this.o.WebSocket ?? globalThis.WebSocket;
    const sse = t.includes("sse") && !!(this.o.fetch ?? globalThis.fetch);
    if (t.includes("websocket") && WS && !(sse && this.wsFails >= this.o.fallbackAfter)) this.openWs(gen, WS, token, at);
    else if (sse) this.openSse(gen, token, at);
    else throw new Error("no usable transport (WebSocket or fetch)");
  }

  /**
   * How far the client's clock is ahead of the token issuer's. A token's age `at − iat` is that
   * skew plus how long the app cached it: one token cannot tell them apart. Two new tokens in a
   * row of about the same age (within 5 s) can: fresh tokens on a skewed clock. Otherwise the
   * clock is trusted (0), so a cached token is still refreshed before its real `exp`.
   */
  private learn(token: string | null | undefined, at: number): void {
    const iat = token ? jwtClaim(token, "iat") : undefined;
    if (iat == null || token == this.seen) return;
    const age = at - iat * 1000;
    this.skew = this.age != null && Math.abs(age - this.age) < 5000 ? Math.min(age, this.age) : 0;
    this.seen = token!;
    this.age = age;
  }

  /** When to refresh `token`, obtained at `at` (`refreshDelay`); undefined: never. */
  private due(token: string | null | undefined, at: number): number | undefined {
    const exp = token ? jwtExp(token) : undefined;
    return exp ? refreshDelay(exp, at, this.o.refreshBeforeExpMs, jwtClaim(token!, "iat"), this.skew) : undefined;
  }

  /** The refresh of the live connection's token, obtained at `at`. Only a live connection has
   * one (`up` arms it, `down` clears it): it never fires into an attempt or a backoff. */
  private arm(token: string | null | undefined, at: number): void {
    clearTimeout(this.refreshTimer);
    const d = this.due(token, at);
    if (!d) return;
    // A timer over 2^31 − 1 ms (24.8 days) would fire at once: a long-lived token waits in steps.
    const rest = Math.max(1000, d - (Date.now() - at));
    this.refreshTimer = setTimeout(() => (rest > MAX_TIMER ? this.arm(token, at) : this.refresh()), Math.min(rest, MAX_TIMER));
  }

  /** A new token before `exp`: reconnect with it at once, rooms resumed (no gap, no 4001). */
  private async refresh(): Promise<void> {
    const gen = this.gen;
    let token;
    try {
      token = this.o.getToken ? await this.o.getToken() : null;
    } catch (e) {
      // Keep the current connection; the next reconnect asks again.
      return this.emit("error", { code: "token", reason: String(e) });
    }
    const at = Date.now();
    this.learn(token, at);
    // The connection it was for is gone: the next attempt gets its own token after the backoff.
    if (gen != this.gen || !this.live || this.closed) return;
    // The same token, or one that looks expired here (no `iat` to tell a fast clock): keep the
    // connection and ask again later (or the gateway's 4001 at `exp` ends it).
    if (token == this.tok || (token && jwtExp(token) && !this.due(token, at))) return this.arm(this.tok, at);
    this.cut(1000, "token refresh");
    this.connect(token, at);
  }

  /** Reconnect now (a new SSE request for a changed room set). */
  private restart(): void {
    this.cut(1000, "rooms changed");
    clearTimeout(this.timer);
    this.connect();
  }

  /** End the current connection on our side; its late events are ignored. */
  private cut(code: number, reason: string): void {
    this.gen++;
    const ws = this.ws;
    this.sse?.abort();
    this.endProbe();
    try {
      ws?.close(1000, reason);
    } catch {
      /* already closed */
    }
    if (this.live) this.down(code, reason);
  }

  private retry(gen: number): void {
    if (gen != this.gen || this.closed) return;
    this.attempt++;
    const delayMs = Math.max(
      backoffDelay(this.attempt, this.o.backoffBaseMs, this.o.backoffCapMs),
      this.notBefore - Date.now(),
    );
    this.notBefore = 0;
    this.emit("reconnecting", { attempt: this.attempt, delayMs });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delayMs);
  }

  // --- back from SSE ---------------------------------------------------------------------------

  /** On SSE with the WebSocket allowed: try it again later (see `probe`). */
  private scheduleProbe(): void {
    const WS = this.o.WebSocket ?? globalThis.WebSocket;
    clearTimeout(this.probeTimer);
    if (!this.o.upgradeProbeMs || !WS || !this.o.transports.includes("websocket") || this.closed) return;
    const gen = this.gen;
    const delayMs = Math.min(this.o.backoffCapMs, this.o.upgradeProbeMs * 2 ** Math.min(this.probes, 20));
    this.probeTimer = setTimeout(() => this.probe(gen, WS), delayMs);
  }

  /**
   * A WebSocket opened beside the live SSE stream. Nothing on SSE ends by itself after an outage
   * that failed the WebSocket (a drain, a restart): without this the client would stay on SSE,
   * where it cannot publish, until the stream broke. When the probe opens it becomes the
   * connection (the stream is ended, every room resumed from its position); when it is refused
   * the stream goes on and the next probe waits twice as long.
   */
  private async probe(gen: number, WS: typeof WebSocket): Promise<void> {
    if (gen != this.gen || this.live != "sse" || this.closed) return;
    this.probes++;
    let token: string | null | undefined = null;
    try {
      token = this.o.getToken ? await this.o.getToken() : null;
    } catch {
      return this.scheduleProbe();
    }
    const at = Date.now();
    this.learn(token, at);
    if (gen != this.gen || this.live != "sse" || this.closed) return;
    this.openWs(gen, WS, token, at, true);
  }

  private endProbe(): void {
    clearTimeout(this.probeTimer);
    const ws = this.probeWs;
    this.probeWs = undefined;
    try {
      ws?.close(1000);
    } catch {
      /* already closed */
    }
  }

  // --- WebSocket -----------------------------------------------------------------------------

  /** A WebSocket attempt for connection `gen`; a `probe` is one made while on SSE (see `probe`). */
  private openWs(gen: number, WS: typeof WebSocket, token: string | null | undefined, at: number, probe = false): void {
    let url = this.o.url.replace(/^http/, "ws");
    const protocols = [this.o.codec.subprotocol];
    if (token) {
      if (this.o.tokenCarrier == "query") url = withParam(url, this.o.tokenQueryParam, token);
      else protocols.push("bearer." + token);
    }
    let ws: WebSocket;
    try {
      ws = new WS(url, protocols);
    } catch (e) {
      if (probe) return this.scheduleProbe();
      this.emit("error", { code: "connect", reason: String(e) });
      return this.retry(gen);
    }
    if (probe) this.probeWs = ws;
    ws.binaryType = "arraybuffer";
    let opened = false;
    let ended = false;
    // Ends this attempt once: some WebSockets (Node 20's) fire only `error`, never `close`, when
    // the handshake is refused; a timed-out attempt may fire neither.
    const end = (code: number, reason: string) => {
      clearTimeout(timeout);
      if (ended || gen != this.gen) return;
      ended = true;
      if (probe && !opened) {
        // Ended by `endProbe` (the stream went, the client closed): nothing more to do.
        if (this.probeWs != ws) return;
        // Refused again: the stream goes on.
        this.probeWs = undefined;
        return this.scheduleProbe();
      }
      this.ws = undefined;
      if (!opened) {
        this.wsFails++;
        this.emit("error", { code: "connect", reason: `WebSocket did not open (${reason || code})` });
      } else this.down(code, reason);
      this.retry(gen);
    };
    const timeout = setTimeout(() => {
      end(1006, "connect timeout");
      ws.close();
    }, this.o.connectTimeoutMs);
    ws.onopen = () => {
      clearTimeout(timeout);
      if (gen != this.gen) return ws.close(1000);
      if (probe) {
        // Adopt it: end the stream (its late events are ignored), then on as any new connection.
        this.probeWs = undefined;
        this.cut(1000, "moving to WebSocket");
        clearTimeout(this.timer);
        gen = this.gen;
      }
      opened = true;
      this.ws = ws;
      this.wsFails = 0;
      this.up("websocket", token, at);
      for (const [room, st] of this.rooms) this.sendJoin(room, st);
      for (const p of this.queue) if (!p.timer) this.sendPending(p);
    };
    ws.onmessage = (e) => {
      if (gen != this.gen) return;
      const f = this.o.codec.decode(e.data);
      if (f) this.onFrame(f);
    };
    ws.onerror = () => {
      if (!opened) end(1006, "refused");
    };
    ws.onclose = (e) => end(e.code, e.reason);
  }

  private async openSse(gen: number, token: string | null | undefined, at: number): Promise<void> {
    if (!this.rooms.size) {
      // The gateway needs at least one room in the request: connect on the first join.
      this.idle = true;
      return;
    }
    const url = new URL(this.o.url.replace(/^ws/, "http"));
    url.searchParams.set("rooms", [...this.rooms.keys()].join(","));
    const known: [string, Position][] = [];
    for (const [room, st] of this.rooms) {
      if (st.pos) known.push([room, st.pos]);
      st.pending = ["", !!st.pos];
    }
    if (known.length) url.searchParams.set("lastEventId", encodeCursor(known));
    const headers: Record<string, string> = { accept: "text/event-stream" };
    if (token) {
      if (this.o.sseTokenCarrier == "header") headers.authorization = "Bearer " + token;
      else url.searchParams.set(this.o.tokenQueryParam, token);
    }
    const ac = new AbortController();
    this.sse = ac;
    const timeout = setTimeout(() => ac.abort(), this.o.connectTimeoutMs);
    let opened = false;
    try {
      const res = await (this.o.fetch ?? fetch)(url, { headers, signal: ac.signal, cache: "no-store" });
      clearTimeout(timeout);
      if (gen != this.gen) return ac.abort();
      if (res.status != 200 || !res.body) {
        const ra = Number(res.headers.get("retry-after"));
        if (ra > 0) this.notBefore = Date.now() + ra * 1000;
        let reason = "";
        try {
          const body = await res.json();
          reason = body.reason ?? body.error;
        } catch {
          /* not JSON */
        }
        this.emit("error", { code: "http", status: res.status, reason: `SSE refused: HTTP ${res.status} ${reason}` });
        return this.retry(gen);
      }
      opened = true;
      this.up("sse", token, at);
      const parser = new SseParser((ev) => {
        if (gen != this.gen) return;
        try {
          this.onFrame(JSON.parse(ev.data));
        } catch {
          /* not JSON: ignored */
        }
      });
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done || gen != this.gen) break;
        parser.feed(value);
      }
    } catch (e) {
      clearTimeout(timeout);
      if (gen == this.gen && !opened) this.emit("error", { code: "connect", reason: String(e) });
    }
    if (gen != this.gen) return;
    if (opened) this.down(1006, "stream ended");
    this.retry(gen);
  }

  private up(t: Transport, token: string | null | undefined, at: number): void {
    this.live = t;
    this.tok = token;
    this.arm(token, at);
    // On SSE, the next reconnect tries the WebSocket once more: an outage (a restart, a drain)
    // that failed a few WebSocket attempts must not leave the client on SSE for good.
    if (t == "sse") this.wsFails = Math.max(0, this.o.fallbackAfter - 1);
    // While the stream lasts, a probe tries the WebSocket now and then (`probe`).
    if (t == "sse") this.scheduleProbe();
    else this.probes = 0;
    this.attempt = 0;
    this.emit("connected", { transport: t, n: ++this.conns });
  }

  /** The connection is gone: nothing in flight on it will be answered. */
  private down(code: number, reason: string): void {
    const was = this.live;
    this.live = undefined;
    clearTimeout(this.refreshTimer);
    this.endProbe();
    this.ws = undefined;
    this.sse = undefined;
    for (const st of this.rooms.values()) st.pending = undefined;
    for (const [, w] of this.waiting) w({ type: "error", code: "offline", reason: "disconnected" });
    this.waiting.clear();
    let first = true;
    for (const p of [...this.queue]) {
      if (!p.sent) continue;
      p.sent = false;
      // A message over maxMessageBytes closes with 1009; the gateway handles messages in order,
      // so it is the oldest unacknowledged one. Sending it again would loop.
      const drop = p.frame.ephemeral || (code == 1009 && first);
      first = false;
      if (drop) this.settle(p, undefined, p.frame.ephemeral ? "offline" : "too_large", reason || "disconnected");
    }
    if (was) this.emit("disconnected", { code, reason });
  }

  // --- frames ----------------------------------------------------------------------------

  private send(f: Frame): boolean {
    if (this.live != "websocket" || !this.ws) return false;
    this.ws.send(this.o.codec.encode(f));
    return true;
  }

  private sendPending(p: Pending): void {
    p.sent = this.send(p.frame);
  }

  private sendJoin(room: string, st: RoomState): void {
    const id = "j" + ++this.ids;
    st.pending = [id, !!st.pos];
    this.send(st.pos ? { type: "join", room, id, since: st.pos } : { type: "join", room, id });
    if (st.h.onPresence) {
      const early: Array<[string, Member]> = [];
      st.early = early;
      this.request({ type: "presence", room }).then(
        (f) => {
          if (st.early === early) st.early = undefined;
          st.members = new Map((f.members as Member[]).map((m) => [m.conn, m]));
          // Joins and leaves seen since the request are newer than, or already in, the
          // snapshot: applying them again is idempotent either way.
          for (const [event, m] of early) applyPresence(st.members, event, m);
          st.h.onPresence?.({ event: "snapshot", members: [...st.members.values()] });
        },
        () => {
          if (st.early === early) st.early = undefined;
        },
      );
    }
  }

  /** Send a frame with a fresh id; resolves with the reply carrying that id. */
  private request(f: Frame): Promise<Frame> {
    return new Promise((ok, fail) => {
      const id = "r" + ++this.ids;
      this.waiting.set(id, (r) => (r.type == "error" ? fail(new SwitchboardError(r.code, r.reason)) : ok(r)));
      if (!this.send({ ...f, id })) {
        this.waiting.delete(id);
        fail(new SwitchboardError("offline", "not connected over WebSocket"));
      }
    });
  }

  private settle(p: Pending, ack?: Ack, code?: string, reason?: string): void {
    const i = this.queue.indexOf(p);
    if (i >= 0) this.queue.splice(i, 1);
    clearTimeout(p.timer);
    if (code) p.fail(new SwitchboardError(code, reason ?? code));
    else p.ok(ack ?? {});
  }

  private onFrame(f: Frame): void {
    const id: string | undefined = f.id;
    const st = this.rooms.get(f.room);
    const p = id ? this.queue.find((q) => q.id == id) : undefined;
    const w = id ? this.waiting.get(id) : undefined;
    if (w) {
      this.waiting.delete(id!);
      return w(f);
    }
    switch (f.type) {
      case "message":
        return this.onMessage(f as Frame & RoomMessage);
      case "batch": {
        // One event for many messages: each is processed as if it had arrived alone, in order.
        const all: RoomMessage[] = (f.groups ?? []).flatMap((g: { messages: RoomMessage[] }) => g.messages);
        all.sort((a, b) => a.seq - b.seq);
        for (const m of all) this.onMessage(m);
        return;
      }
      case "receipt":
        if (st) {
          const r: Receipt = { room: f.room, user: f.user, position: f.position };
          st.h.onReceipt?.(r);
          this.emit("receipt", r);
        }
        return;
      case "joined":
        return this.onJoined(f, id);
      case "ack":
        if (p) this.settle(p, f.seq ? { seq: f.seq, epoch: f.epoch } : {});
        return;
      case "error":
        this.emit("error", { code: f.code, reason: f.reason, id });
        if (p) {
          if (f.code != "unavailable") return this.settle(p, undefined, f.code, f.reason);
          p.sent = false;
          p.timer = setTimeout(() => {
            p.timer = undefined;
            if (this.live == "websocket") this.sendPending(p);
          }, this.o.retryUnavailableMs);
          return;
        }
        for (const [room, s] of this.rooms)
          if (id && s.pending?.[0] == id) {
            s.pending = undefined;
            // Unavailable: joined again on the next connection; refused: forgotten.
            if (f.code != "unavailable") {
              this.rooms.delete(room);
              s.h.onError?.(new SwitchboardError(f.code, f.reason));
            }
          }
        return;
      case "lost":
        if (st) {
          if (f.to) st.pos = f.to;
          this.gap(st, { room: f.room, reason: "lost", from: f.from, to: f.to, ephemeral: f.ephemeral ?? 0 });
        }
        return;
      case "presence":
        if (st && f.member) {
          applyPresence(st.members, f.event, f.member);
          st.early?.push([f.event, f.member]);
          st.h.onPresence?.({ event: f.event, member: f.member, members: [...st.members.values()] });
        }
        return;
      case "shutdown":
        this.notBefore = Date.now() + (f.reconnectAfterMs ?? 0);
        return this.emit("shutdown", { reconnectAfterMs: f.reconnectAfterMs ?? 0 });
    }
  }

  private gap(st: RoomState, g: Gap): void {
    st.h.onGap?.(g);
    this.emit("gap", g);
  }

  private onJoined(f: Frame, id?: string): void {
    const position = f.position as Position | undefined;
    if (!position) return;
    let st = this.rooms.get(f.room);
    let resumed = false;
    if (!st) {
      // An automatic join (the user room): kept and resumed like the others.
      st = this.state(f.room, {});
    } else if (st.pending) {
      // An automatic join while our own join of it is on its way: that join decides.
      if ((id ?? "") != st.pending[0]) return;
      resumed = st.pending[1];
      st.pending = undefined;
    }
    // Recovered: the gap follows and raises the position. Otherwise continue after `position`.
    const recovered = !!f.recovered;
    if (!recovered) st.pos = position;
    const read = "unread" in f ? { read: (f.read ?? null) as Position | null, unread: f.unread as number } : {};
    st.h.onJoined?.({ recovered, resumed, position, ...read });
    if (resumed && !recovered) this.gap(st, { room: f.room, reason: "not_recovered", position });
  }

  private onMessage(m: RoomMessage): void {
    const st = this.rooms.get(m.room);
    // A room we left; or a join is unanswered: its replay (after `since`) sends this again.
    if (!st || st.pending) return;
    if (m.seq) {
      if (st.pos && st.pos.epoch == m.epoch && m.seq <= st.pos.seq) return;
      st.pos = { seq: m.seq, epoch: m.epoch };
    }
    const { type: _t, ...msg } = m as RoomMessage & { type?: string };
    st.h.onMessage?.(msg);
    this.emit("message", msg);
  }
}

function withParam(url: string, name: string, value: string): string {
  return url + (url.includes("?") ? "&" : "?") + encodeURIComponent(name) + "=" + encodeURIComponent(value);
}

function toB64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function applyPresence(members: Map<string, Member>, event: string, m: Member): void {
  if (event == "leave") members.delete(m.conn);
  else members.set(m.conn, m);
}
