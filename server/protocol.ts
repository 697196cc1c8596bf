/**
 * The service's protocol, types only: the payloads of the Socket.IO events,
 * Socket.IO's four event maps, and the /ws JSON frames. No runtime code and
 * no imports, so a TypeScript client can use it as it is:
 *
 *   import type { ClientToServerEvents, ServerToClientEvents } from "ws-broadcast-service/protocol";
 *   const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io(url);
 */

/** Where a chat message entered the domain; `http` ones render as bare text on /ws. */
export type Origin = "socket.io" | "ws" | "http";

export interface ChatMessage {
  text: string;
  from: string;
  instance: string;
  room?: string;
  origin: Origin;
  at: string;
  /** Its place in the broadcast history: keep the last one to recover after a reconnect. Absent when history is off, or for what an instance delivered alone during a Redis outage. */
  offset?: string;
}

export interface InstanceStatus {
  id: string;
  clients: number;
  draining: boolean;
}

export interface StatusNotification {
  type: "status";
  requestedBy: string;
  instances: InstanceStatus[];
  clients: number;
  /** True when an instance did not answer in time: the figures are what the others said. */
  partial: boolean;
  at: string;
  /** As ChatMessage.offset: status notifications are broadcasts in the history too. */
  offset?: string;
}

export interface PeriodicNotification {
  type: "periodic";
  instance: string;
  intervalSec: number;
  at: string;
}

export interface DrainingNotification {
  type: "draining";
  instance: string;
  at: string;
}

export type Notification = StatusNotification | PeriodicNotification | DrainingNotification;

export interface Welcome {
  /** This connection's id, unique cluster-wide. */
  clientId: string;
  /** Who it is: the client token's `sub`, or the clientId without tokens. Its personal room is `user:<user>`. */
  user: string;
  /** The rooms it is in (besides its personal room): those of `auth.rooms` / `?rooms=` it may read. */
  rooms: string[];
  instance: string;
  commands: readonly string[];
  at: string;
  /** The history's incarnation: send it back with your last offset when you reconnect. */
  epoch: string;
  /** Where this connection starts: your last offset until a broadcast arrives. */
  offset: string;
  /** True when everything after the offset you sent was replayed; false when anything may be missing (reload your state), or when you sent none. */
  recovered: boolean;
  /** Broadcasts replayed on this connection, right after this welcome and before anything live. */
  replayed: number;
  /** When you sent an offset and `recovered` is false: why. */
  reason?: RecoveryReason;
}

/** Sent ahead of a client token's expiry: send a fresh one (Socket.IO `refresh`, /ws `{"type":"refresh"}`) before `closesInMs` has passed. */
export interface Expiring {
  expiresAt: string;
  closesInMs: number;
}

/** A room the connection was taken out of (a fresh token may no longer read it). */
export interface LeftRoom extends ErrorBody {
  room: string;
}

/** One connection, as the admin API lists a user's. */
export interface ConnectionInfo {
  clientId: string;
  user: string;
  instance: string;
  transport: "socket.io" | "ws";
  rooms: string[];
  since: string;
}

/**
 * Why a recovery was not complete: another history (`EPOCH_CHANGED`: Redis
 * lost its data, a lone instance restarted), the offset was trimmed away
 * (`TRIMMED`), an instance served its own clients alone in between (`GAP`),
 * more was missed than one replay may carry (`TOO_LARGE`: the newest part is
 * replayed), an offset the history never gave (`FUTURE_OFFSET`), or the
 * history could not be read (`UNAVAILABLE`).
 */
export type RecoveryReason = "EPOCH_CHANGED" | "TRIMMED" | "GAP" | "TOO_LARGE" | "FUTURE_OFFSET" | "UNAVAILABLE";

/** Codes of refusals: acks, `connect_error` data, /ws error frames and HTTP bodies. */
export type ErrorCode =
  | "DRAINING"
  | "DUPLICATE_CLIENT_ID"
  | "INVALID_CLIENT_ID"
  | "ORIGIN_NOT_ALLOWED"
  | "NOT_FOUND"
  | "UNAUTHORIZED"
  | "ADMIN_DISABLED"
  | "FORBIDDEN"
  | "TOKEN_EXPIRED"
  | "TOO_MANY_CONNECTIONS"
  | "BLOCKED"
  | "DISCONNECTED"
  | "RATE_LIMITED"
  | "TOO_MANY_ROOMS"
  | "OVER_CAPACITY"
  | "BAD_REQUEST"
  | "TOO_LARGE"
  | "UNSUPPORTED_DATA"
  | "INTERNAL";

/** A refusal as every transport carries it. */
export interface ErrorBody {
  error: string;
  code: ErrorCode;
}

/** Every acknowledgement: success (maybe with extra fields) or a coded refusal. */
export type Ack<Extra extends object = object> = ({ ok: true } & Extra) | ({ ok: false } & ErrorBody);

/** What a client may send as a message: the text, or the text and a room. */
export type MessagePayload = string | { text: string; room?: string };

/** Socket.IO handshake `auth`. */
export interface HandshakeAuth {
  /** 1–64 of [A-Za-z0-9_.-]; the server assigns `anon-…` when absent. */
  clientId?: string;
  /** A JWT, when the server requires client tokens (its `sub` is the user; its `wbs` claim what it may read and send). */
  token?: string;
  /** Recovery: the last offset received and the epoch of the welcome it came with. socket.io-client's `auth` may be a function, called on every reconnect. */
  offset?: string;
  epoch?: string;
  /** Rooms to be in again, joined before the replay (so their messages are replayed too). */
  rooms?: string[];
}

export interface ServerToClientEvents {
  welcome: (welcome: Welcome) => void;
  message: (message: ChatMessage) => void;
  notification: (notification: Notification) => void;
  /** The client token expires soon: emit `refresh` with a fresh one. */
  expiring: (notice: Expiring) => void;
  /** Taken out of a room (its fresh token may not read it). */
  left: (notice: LeftRoom) => void;
  /** Why the server is about to close this connection (TOKEN_EXPIRED, DISCONNECTED, RATE_LIMITED, ...). */
  closing: (reason: ErrorBody) => void;
}

export interface ClientToServerEvents {
  message: (payload: MessagePayload, ack?: (answer: Ack) => void) => void;
  join: (room: string, ack?: (answer: Ack<{ room: string }>) => void) => void;
  leave: (room: string, ack?: (answer: Ack<{ room: string }>) => void) => void;
  status: (ack?: (answer: Ack) => void) => void;
  /** A fresh client token for the same user; the answer carries its expiry (null: none). */
  refresh: (token: string, ack?: (answer: Ack<{ expiresAt: string | null }>) => void) => void;
}

/** What travels through the broadcast domain: a Socket.IO event and its payload. */
export type DomainEvent = { event: "message"; data: ChatMessage } | { event: "notification"; data: Notification };

/** One broadcast as it travels between instances. */
export interface Envelope {
  event: DomainEvent;
  /** Deliver only to this room's members. */
  room?: string;
}

export interface ClusterQuery {
  name: "status" | "clients" | "members" | "user" | "disconnect";
  room?: string;
  /** `user`: list its connections; `disconnect`: close them with `code` / `reason`. */
  user?: string;
  reason?: string;
  code?: number;
}

/** A question to every other instance: deliver and count (`publish`), or answer a query. */
export interface ClusterRequest {
  /** The asking instance's bus id: replies reach every instance, only it keeps them. */
  from: string;
  id: number;
  kind: "publish" | "query";
  body: Envelope | ClusterQuery;
}

export interface ClusterReply {
  to: string;
  id: number;
  answer: InstanceStatus | string[] | number | ConnectionInfo[];
}

/** Between instances, over the Redis adapter (`serverSideEmit`). */
export interface InterServerEvents {
  "wbs:publish": (envelope: Envelope) => void;
  "wbs:request": (request: ClusterRequest) => void;
  "wbs:reply": (reply: ClusterReply) => void;
  /** An address cut for flooding: every instance refuses its new sessions for a while. */
  "wbs:penalty": (address: string) => void;
  /** A user blocked (until: ms since the epoch; 0 lifts it): every instance refuses its new connections. */
  "wbs:block": (block: { user: string; until: number }) => void;
}

/** /ws with `?format=json`: every frame the server sends. `id` echoes the request's, when it gave one. */
export type WsServerFrame =
  | { type: "welcome"; data: Welcome }
  | { type: "message"; data: ChatMessage }
  | { type: "notification"; data: Notification }
  | { type: "echo"; data: { text: string } }
  | { type: "ack"; id?: WsRequestId; data: Record<string, unknown> }
  | { type: "error"; id?: WsRequestId; data: ErrorBody }
  | { type: "expiring"; data: Expiring }
  | { type: "left"; data: LeftRoom }
  | { type: "closing"; data: ErrorBody };

/** A /ws request's id, echoed in its answer: a number or a short string. */
export type WsRequestId = number | string;

/**
 * /ws with `?format=json`: a frame a client may send. `{text, room?}` (or
 * plain text) is a message; a frame with `type` is a request answered by one
 * `ack` or `error` frame carrying its `id`.
 */
export type WsClientFrame =
  | { text: string; room?: string; id?: WsRequestId }
  | { type: "message"; text: string; room?: string; id?: WsRequestId }
  | { type: "join" | "leave"; room: string; id?: WsRequestId }
  | { type: "refresh"; token: string; id?: WsRequestId };
