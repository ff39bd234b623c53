// A typing indicator on top of the core: ephemeral publishes, debounced, and a tracker of who
// is typing from the messages of a room. Not part of the core's size budget.

import type { PublishOptions, RoomMessage } from "./index.js";

/** What the indicator needs of a client (a `SwitchboardClient` or a `Subscription`'s room). */
export interface EphemeralPublisher {
  publish(room: string, data: unknown, opts?: PublishOptions): Promise<unknown>;
}

export interface TypingOptions {
  /** `{typing: false}` after this long without a keystroke. Default 3 s. */
  idleMs?: number;
  /** While typing, `{typing: true}` again at most this often (late joiners see it). Default 2 s. */
  resendMs?: number;
}

/**
 * Call `keystroke()` on input: the first one publishes `{typing: true}` (ephemeral), later ones
 * at most every `resendMs`; `idleMs` without one publishes `{typing: false}`, as does `stop()`
 * (on send). Publishing while offline fails quietly: typing state is not worth queueing.
 */
export function typingIndicator(client: EphemeralPublisher, room: string, opts: TypingOptions = {}) {
  const idleMs = opts.idleMs ?? 3000;
  const resendMs = opts.resendMs ?? 2000;
  let typing = false;
  let lastSent = 0;
  let idle: ReturnType<typeof setTimeout> | undefined;
  const send = (on: boolean) => {
    typing = on;
    lastSent = Date.now();
    client.publish(room, { typing: on }, { ephemeral: true }).catch(() => {});
  };
  const stop = () => {
    clearTimeout(idle);
    if (typing) send(false);
  };
  return {
    keystroke() {
      if (!typing || Date.now() - lastSent >= resendMs) send(true);
      clearTimeout(idle);
      idle = setTimeout(stop, idleMs);
    },
    stop,
  };
}

/**
 * Who is typing in a room: feed it every message (`onMessage`); `onChange` gets the sorted
 * `sub`s. A user who stops sending `{typing: true}` drops out after `expireMs` (default 5 s).
 */
export function typingTracker(onChange: (users: string[]) => void, expireMs = 5000) {
  const users = new Map<string, ReturnType<typeof setTimeout>>();
  const changed = () => onChange([...users.keys()].sort());
  const drop = (sub: string) => {
    clearTimeout(users.get(sub));
    if (users.delete(sub)) changed();
  };
  return {
    onMessage(m: RoomMessage) {
      const d = m.data as { typing?: unknown } | undefined;
      const sub = m.from?.sub;
      if (!m.ephemeral || !sub || !d || typeof d.typing != "boolean") return;
      if (!d.typing) return drop(sub);
      const known = users.has(sub);
      clearTimeout(users.get(sub));
      users.set(sub, setTimeout(() => drop(sub), expireMs));
      if (!known) changed();
    },
    /** Clear every timer (the room was left). */
    dispose() {
      for (const t of users.values()) clearTimeout(t);
      users.clear();
    },
  };
}
