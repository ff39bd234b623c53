// @switchboard/client: the core. Helpers live in their own entry points (`@switchboard/client/typing`).
export { SwitchboardClient, SwitchboardError } from "./client.js";
export type { ClientEvents, ClientOptions, JoinHandlers, PublishOptions, Receipt, Subscription, Transport } from "./client.js";
export { SseParser, backoffDelay, encodeCursor, jsonCodec, jwtExp, refreshDelay } from "./protocol.js";
export type { Ack, Codec, Frame, Gap, Member, Position, RoomMessage, SseEvent } from "./protocol.js";
