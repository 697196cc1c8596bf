/** What the parent and a load-generator child say to each other over IPC. */
import type { RecoveryCounts } from "../../harness/rolling-restart.js";

/** raw: the baseline server; ws: the service's /ws; sio: the service's Socket.IO (WebSocket transport). */
export type Kind = "raw" | "ws" | "sio";
/** fanout: receive broadcasts; echo: request/response; idle: just hold the connection. */
export type Mode = "fanout" | "echo" | "idle";

/** The marker that starts every broadcast text: `bm|<seq>|<publishedUs>|<padding>`. */
export const BROADCAST_MARK = "bm|";
/** And every echo request: `em|<sentUs>|<padding>`. */
export const ECHO_MARK = "em|";
/** Socket.IO echo requests go to a room nobody joins: the full message path, no fan-out. */
export const ECHO_ROOM = "bench-echo-void";

export interface ConnectOrder {
  op: "connect";
  /** Clients are counted and closed by group (one a target, say). */
  group: string;
  kind: Kind;
  mode: Mode;
  /** Base http:// URLs; connection j goes to urls[(startIndex + j) % urls.length]. */
  urls: string[];
  count: number;
  /** Global index of this child's first connection, so children never share an index. */
  startIndex: number;
  /** Connection attempts a second (this child's share); 0 = as fast as `concurrency` allows. */
  ratePerSec: number;
  /** Handshakes in flight at most. */
  concurrency: number;
  /** Past this many connections to one URL, use source addresses 127.0.0.2, .3, … (ports run short). */
  spreadAfter: number;
  /** Reconnect (after 0.5–1.5 s, as socket.io-client does by default) when the server closes. */
  reconnect: boolean;
  /**
   * Socket.IO: keep each client's place in the service's history and send it
   * (offset, epoch) on every reconnect, so the instance it lands on replays
   * what it missed; count every broadcast it gets (duplicates, out of order).
   */
  recover?: boolean;
  /** Client ids for /ws/{id} echo connections. */
  idPrefix: string;
  timeoutMs: number;
}

export type Order =
  | ConnectOrder
  /** Per-client delivery counting from `fromSeq` on; forget older broadcasts. */
  | { op: "track"; fromSeq: number; completion: boolean; group?: string }
  /** Counters and histograms of a group (all when not given); `reset` starts them again afterwards. */
  | { op: "stats"; reset: boolean; group?: string }
  /** Send echo requests at `ratePerSec` for `durationMs`, then wait for answers. */
  | { op: "echo"; ratePerSec: number; durationMs: number; payloadBytes: number; group?: string }
  /** Delivery per client since `track`, for the drain scenario. */
  | { op: "delivery"; group?: string }
  /** Stop reconnecting and close every connection of a group (all when not given). */
  | { op: "close"; group?: string }
  | FloodOrder
  | ReplayOrder
  | AddressFloodOrder
  | { op: "exit" };

/**
 * An abusive client: one connection at a time that sends `text` as fast as its
 * socket takes it, and when the server cuts it, connects again at once (like
 * an attacker would), until `durationMs` has passed.
 */
export interface FloodOrder {
  op: "flood";
  /** Its connections are counted under this group (they also receive broadcasts). */
  group: string;
  kind: Kind;
  url: string;
  /** A chat text (sent as a text frame on /ws, a `message` event on Socket.IO). */
  text: string;
  durationMs: number;
  timeoutMs: number;
}

export interface FloodResult {
  /** Frames handed to the socket (those still queued when the server cut it are lost). */
  sent: number;
  /** Connections opened (the first and every reconnect). */
  connects: number;
  connectFailures: number;
  /** Why connects failed, and how often. */
  connectErrors: Record<string, number>;
  /** Connections the server closed (or that dropped), by WebSocket close code. */
  closedByServer: Record<string, number>;
  elapsedMs: number;
}

/**
 * The replay attacker: `requests` /ws connections in JSON mode, one every
 * `durationMs / requests`, each asking for the history since `since` of
 * `epoch`; each reads its welcome and then nothing more, and is let go when
 * the next one connects (the last at the deadline).
 */
export interface ReplayOrder {
  op: "replay";
  /** The stack's base http:// URL. */
  url: string;
  since: string;
  epoch: string;
  /** Source address of every connection (one address: nginx's per-address limits see one client). */
  localAddress: string;
  requests: number;
  durationMs: number;
  timeoutMs: number;
}

export interface ReplayResult {
  requests: number;
  /** Answered 101. */
  upgraded: number;
  /** Other answers, by HTTP status, and connects that got no answer, by why. */
  refused: Record<string, number>;
  failed: Record<string, number>;
  /** What the welcomes said: how many said recovered: true, broadcasts replayed (in all, and the most one welcome announced), and the reasons given. */
  recovered: number;
  replayed: number;
  replayedMax: number;
  reasons: Record<string, number>;
  /** Upgraded connections whose welcome did not come within the time limit. */
  noWelcome: number;
  elapsedMs: number;
}

/**
 * The address flood: `connections` /ws connections from one source address,
 * each sending `text` `ratePerSec` times a second (paced, never queued
 * behind a full socket) and discarding what it gets unread; one the server
 * closes connects again after 50 ms, until `durationMs` has passed.
 */
export interface AddressFloodOrder {
  op: "addressFlood";
  /** The stack's base http:// URL. */
  url: string;
  localAddress: string;
  connections: number;
  ratePerSec: number;
  text: string;
  durationMs: number;
  timeoutMs: number;
}

export interface AddressFloodResult {
  /** Connections asked for (held at once). */
  connections: number;
  /** Connections opened (the first of each and every reconnect). */
  connects: number;
  connectFailures: number;
  /** Why connects failed (`HTTP 429`, `ECONNRESET`, …), and how often. */
  connectErrors: Record<string, number>;
  /** Frames written; and those skipped because the socket had not taken the last ones yet. */
  sent: number;
  skipped: number;
  /** Connections that ended under it (the server or nginx closed them). */
  closedByServer: number;
  /** The most connections open at once. */
  openMax: number;
  elapsedMs: number;
}

export interface ConnectResult {
  opened: number;
  failed: number;
  /** Error messages and how often. */
  errors: Record<string, number>;
  /** Encoded histogram of connect times (µs). */
  connectHist: string;
  elapsedMs: number;
}

export interface Stats {
  open: number;
  /** Broadcast frames received. */
  frames: number;
  /** Encoded histogram of publish-to-receipt latency (µs). */
  latencyHist: string;
  /** Connections that closed without being asked to. */
  drops: number;
}

export interface EchoResult {
  sent: number;
  answered: number;
  errors: number;
  /** Encoded histogram of round trips (µs). */
  rttHist: string;
}

export interface Delivery {
  /**
   * Clients never disconnected since `track`: broadcasts received, skipped
   * (a later one arrived first: lost), and the sum of the last sequence
   * numbers seen (so the parent can tell what has not arrived yet).
   */
  stayed: DeliveryBucket;
  /** Clients that lost their connection at least once. */
  moved: DeliveryBucket;
  /** Instances (from the Engine.IO sid prefix) of the moved clients before they moved. */
  movedFrom: Record<string, number>;
  reconnects: number;
  reconnectFailures: number;
  /** Why reconnect attempts failed, and how often. */
  reconnectErrors: Record<string, number>;
  /** Encoded histogram of disconnect-to-reconnected times (µs). */
  reconnectHist: string;
  firstDisconnectUs: number | undefined;
  lastReconnectUs: number | undefined;
  open: number;
  pendingReconnects: number;
  /** Open clients of the group by the broadcasts each got since `track` (count → clients). */
  receivedBy: Record<string, number>;
  /** Broadcasts since `track` that reached clients of the group no longer open, or never opened. */
  receivedByNotOpen: number;
  /** Clients of the group that were open and no longer are (dropped, not reconnected). */
  closed: number;
}

/** Duplicates for every client; out of order, resumes and what the welcomes said for recovering ones. */
export interface DeliveryBucket extends RecoveryCounts {
  clients: number;
  /** Distinct broadcasts received. */
  received: number;
  /** Broadcasts jumped over (a later one came first); one that comes later still counts as out of order instead. */
  skipped: number;
  sumLastSeq: number;
}

export type Report =
  | { type: "ready"; capacity: number }
  | { type: "reply"; id: number; result: unknown; error?: string }
  /** A broadcast reached every open fanout client of this child; `last` = µs of the last receipt. */
  | { type: "done"; seq: number; last: number }
  | { type: "beat"; open: number; frames: number; failed: number; connecting: number };
