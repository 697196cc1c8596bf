import type { ClientRegistry, Lease, Transport } from "../cluster/registry.js";
import type { UserSessions } from "../cluster/user-sessions.js";
import type { BroadcastDomain, Envelope } from "../domain/broadcast.js";
import { COMMANDS, isRoomName, isUserRoom, now, ROOM_RULE } from "../domain/names.js";
import { Permissions } from "../domain/permissions.js";
import { ServiceError } from "../errors.js";
import type { Logger } from "../logger.js";
import type { Metrics } from "../metrics.js";
import type { ConnectionInfo, ErrorBody, Expiring, LeftRoom, Welcome } from "../protocol.js";
import { giveBack } from "./admission.js";
import type { TokenVerifier } from "./client-auth.js";
import type { PenaltyBox } from "./penalty.js";
import { type PublishLimits, PublishRefused } from "./publish-limits.js";
import type { Bucket, RateLimiter } from "./rate-limit.js";
import { ReplayBoundary, type ReplayPolicy, type Resume, startConnection } from "./recovery.js";

/**
 * What a gateway gives a connection: a thin translation to its frames
 * (Socket.IO events, /ws JSON or text). Room membership is the transport's
 * own index (Socket.IO's adapter rooms, /ws's map), so its sink finds the
 * members of a room; the personal room is not in it (ConnectionHub.ofUser).
 */
export interface ConnectionTransport {
  readonly name: Transport;
  /** One broadcast, live or replayed. */
  deliver(e: Envelope): void;
  greet(welcome: Welcome): void;
  expiring(notice: Expiring): void;
  left(notice: LeftRoom): void;
  join(room: string): void;
  leave(room: string): void;
  has(room: string): boolean;
  rooms(): string[];
  /** Bytes queued here for the client, unsent. */
  queued(): number;
  open(): boolean;
  /**
   * Ends the connection for a coded reason, telling the client first:
   * `reconnect` (a Socket.IO client then reconnects by itself, its `auth`
   * function fetching a fresh token) or not (the client decides).
   */
  close(err: ServiceError, reconnect: boolean): void;
  /** Drops it at once (a slow reader, a flooder). */
  cut(): void;
  /** Reads no more of what it sends (a flooder being cut). */
  stopReading(): void;
}

/** A flooder's close frame has this long to go out before its socket is dropped. */
const FLOOD_CUT_GRACE_MS = 500;

/** What admission gave a new connection: its clientId, who it is, what it may do and until when. */
export interface Admitted {
  lease: Lease;
  permissions: Permissions;
  expiresAt: number | undefined;
  /** Its place in the per-user cap, when there is one. */
  userLease: string | undefined;
}

export interface HubDeps {
  config: {
    instanceId: string;
    maxRoomsPerConnection: number;
    tokenRefreshAheadMs: number;
    tokenExpiryGraceMs: number;
  };
  log: Logger;
  metrics: Metrics;
  domain: BroadcastDomain;
  registry: ClientRegistry;
  users: UserSessions;
  limiter: RateLimiter;
  penalties: PenaltyBox;
  publishLimits: PublishLimits;
  replays: ReplayPolicy;
  verifyToken: TokenVerifier | undefined;
}

/**
 * One client connection, on any transport: who it is, its rooms and what it
 * may read and send, its token's deadline, its rate limit and its recovery.
 * The gateways drive it and only translate frames; its life is written here
 * once, so the two cannot drift.
 */
export class Connection {
  /** Set while its replay runs: live broadcasts wait at this boundary. */
  boundary: ReplayBoundary | undefined;
  readonly bucket: Bucket | undefined;
  /** When it opened, ms since the epoch (a number, not a string a connection). */
  readonly #since = Date.now();
  #permissions: Permissions;
  #expiresAt: number | undefined;
  #timer: NodeJS.Timeout | undefined;
  #ended = false;

  constructor(
    private readonly hub: ConnectionHub,
    readonly transport: ConnectionTransport,
    private readonly admitted: Admitted,
    readonly address: string,
  ) {
    this.bucket = hub.deps.limiter.bucket();
    this.#permissions = admitted.permissions;
    this.#expiresAt = admitted.expiresAt;
  }

  get id(): string {
    return this.admitted.lease.id;
  }

  get user(): string {
    return this.#permissions.user;
  }

  get permissions(): Permissions {
    return this.#permissions;
  }

  /** Joins the rooms it asked for that it may read, then greets it and replays what it missed of them. */
  start(resume: Resume | undefined, rooms: readonly string[]): void {
    const { domain, replays, config } = this.hub.deps;
    for (const room of rooms) if (isRoomName(room) && !isUserRoom(room) && this.#permissions.mayRead(room)) this.transport.join(room);
    this.#schedule();
    const boundary = new ReplayBoundary(
      (e) => this.transport.deliver(e),
      () => (this.boundary = undefined),
    );
    this.boundary = boundary;
    void startConnection({
      domain,
      resume: domain.head() ? resume : undefined,
      policy: replays,
      base: { clientId: this.id, user: this.user, instance: config.instanceId, commands: COMMANDS, at: now(), rooms: this.transport.rooms() },
      entitled: (e) => this.mayReceive(e.room),
      boundary,
      greet: (w) => this.transport.greet(w),
      send: (e) => this.transport.deliver(e),
      queued: () => this.transport.queued(),
      open: () => this.transport.open(),
      cut: () => {
        this.hub.deps.metrics.slowClientsCut.inc({ transport: this.transport.name });
        this.hub.deps.log.warn({ clientId: this.id, transport: this.transport.name }, "slow client cut: it did not read its replay");
        this.transport.cut();
      },
      onError: (err) => this.hub.deps.log.warn({ clientId: this.id, err: err.message }, "recovery failed: the client is told recovered: false"),
    });
  }

  /** Whether a broadcast to `room` (undefined: everyone) is for it. */
  mayReceive(room: string | undefined): boolean {
    return room === undefined || room === this.#permissions.personalRoom || this.transport.has(room);
  }

  /** Rate limit of what it sends: "ok", "refused" (answered), or "disconnect" (it kept sending while refused: cut here, and its address boxed). */
  take(): "ok" | "refused" | "disconnect" {
    const { limiter, metrics } = this.hub.deps;
    const verdict = limiter.take(this.bucket);
    if (verdict === "ok") return verdict;
    metrics.rateLimited.inc({ transport: this.transport.name });
    if (verdict === "disconnect")
      this.#cutForFlooding(new ServiceError("RATE_LIMITED", `at most ${limiter.description}`), "rate limit: client kept sending while refused; disconnected");
    return verdict;
  }

  /**
   * Cuts it for flooding: told why, what it still sends left unread, dropped
   * FLOOD_CUT_GRACE_MS later (no closing handshake with a flooder), and its
   * address boxed cluster-wide.
   */
  #cutForFlooding(err: ServiceError, why: string): void {
    const { metrics, log, penalties } = this.hub.deps;
    metrics.rateLimitDisconnects.inc({ transport: this.transport.name });
    log.warn({ clientId: this.id, transport: this.transport.name, address: this.address }, why);
    penalties.punish(this.address);
    this.close(err, false);
    this.transport.stopReading();
    setTimeout(() => this.transport.cut(), FLOOD_CUT_GRACE_MS).unref();
  }

  /** @throws ServiceError BAD_REQUEST, FORBIDDEN or TOO_MANY_ROOMS. */
  join(room: unknown): void {
    if (!isRoomName(room)) throw new ServiceError("BAD_REQUEST", ROOM_RULE);
    this.#permissions.checkJoin(room);
    // Its own personal room: it is in it already.
    if (room === this.#permissions.personalRoom || this.transport.has(room)) return;
    const cap = this.hub.deps.config.maxRoomsPerConnection;
    if (cap > 0 && this.transport.rooms().length >= cap) throw new ServiceError("TOO_MANY_ROOMS", String(cap));
    this.transport.join(room);
  }

  leave(room: unknown): void {
    if (!isRoomName(room)) throw new ServiceError("BAD_REQUEST", ROOM_RULE);
    this.transport.leave(room);
  }

  /** A message it sends, to everyone or a room: checked against its grants and the publish limits, then published. */
  async publish(text: unknown, room: unknown): Promise<void> {
    const { domain, publishLimits, metrics } = this.hub.deps;
    metrics.messagesIn.inc({ transport: this.transport.name });
    if (room !== undefined && !isRoomName(room)) throw new ServiceError("BAD_REQUEST", ROOM_RULE);
    this.#permissions.checkSend(room);
    try {
      publishLimits.admit(this.transport.name, this.address, text);
    } catch (err) {
      if (err instanceof PublishRefused && err.disconnect) this.#cutForFlooding(err, "address limit: its address kept sending while refused; disconnected");
      throw err;
    }
    await domain.handleClientText({ from: this.id, origin: this.transport.name, text, room });
  }

  /** The demo page's status button. */
  status(): Promise<void> {
    return this.hub.deps.domain.publishStatus(this.id);
  }

  /**
   * A fresh token, in-band: same user; its grants replace the old ones (rooms
   * it may no longer read are left, with a notice) and its `exp` the deadline.
   * @throws ServiceError UNAUTHORIZED, TOKEN_EXPIRED or BAD_REQUEST (tokens are off).
   */
  async refresh(token: unknown): Promise<{ expiresAt: number | undefined }> {
    const verify = this.hub.deps.verifyToken;
    if (!verify) throw new ServiceError("BAD_REQUEST", "client tokens are off on this server: nothing to refresh");
    const claims = await verify(token);
    if (claims.user !== this.user) throw new ServiceError("UNAUTHORIZED", "the fresh token is for another user");
    if (this.#ended) return { expiresAt: claims.expiresAt };
    this.#permissions = new Permissions(claims.user, claims.grants);
    this.#expiresAt = claims.expiresAt;
    for (const room of this.transport.rooms()) {
      if (this.#permissions.mayRead(room)) continue;
      this.transport.leave(room);
      const err = new ServiceError("FORBIDDEN", `the fresh token may not read room ${room}`);
      this.transport.left({ room, ...err.toJSON() });
    }
    this.#schedule();
    return { expiresAt: claims.expiresAt };
  }

  /** What GET /users/{user}/connections says of it. */
  info(): ConnectionInfo {
    return {
      clientId: this.id,
      user: this.user,
      instance: this.hub.deps.config.instanceId,
      transport: this.transport.name,
      rooms: this.transport.rooms(),
      since: new Date(this.#since).toISOString(),
    };
  }

  /** Closes it for a coded reason (admin disconnect, a token past its deadline). */
  close(err: ServiceError, reconnect: boolean): void {
    if (this.#ended) return;
    this.hub.deps.metrics.refusals.inc({ code: err.code });
    this.transport.close(err, reconnect);
  }

  /** The transport has closed: gives back everything it took (idempotent). */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    clearTimeout(this.#timer);
    this.boundary?.drop();
    this.boundary = undefined;
    this.hub.remove(this);
    giveBack(this.hub.deps, this.admitted);
  }

  /** The token's deadline: a notice `tokenRefreshAheadMs` before it, the close `tokenExpiryGraceMs` after it. */
  #schedule(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const at = this.#expiresAt;
    if (at === undefined || this.#ended) return;
    const { tokenRefreshAheadMs, tokenExpiryGraceMs } = this.hub.deps.config;
    const noticeIn = at - tokenRefreshAheadMs - Date.now();
    const tell = () => {
      this.transport.expiring({ expiresAt: new Date(at).toISOString(), closesInMs: Math.max(0, at + tokenExpiryGraceMs - Date.now()) });
      this.#timer = setTimeout(() => this.close(new ServiceError("TOKEN_EXPIRED"), true), Math.max(0, at + tokenExpiryGraceMs - Date.now()));
      this.#timer.unref();
    };
    if (noticeIn <= 0) return tell();
    this.#timer = setTimeout(tell, noticeIn);
    this.#timer.unref();
  }
}

/**
 * This instance's connections, both transports: by user (the personal rooms,
 * the admin's cut-off and listing), and the dependencies every connection shares.
 */
export class ConnectionHub {
  /** A user's one connection here, or a set of them once it has several (most users hold one: no set for them). */
  readonly #byUser = new Map<string, Connection | Set<Connection>>();

  constructor(readonly deps: HubDeps) {}

  /** A connection admission let in, on its transport. */
  open(transport: ConnectionTransport, admitted: Admitted, address: string): Connection {
    const c = new Connection(this, transport, admitted, address);
    const held = this.#byUser.get(c.user);
    if (held === undefined) this.#byUser.set(c.user, c);
    else if (held instanceof Set) held.add(c);
    else this.#byUser.set(c.user, new Set([held, c]));
    return c;
  }

  remove(c: Connection): void {
    const held = this.#byUser.get(c.user);
    if (held === c) this.#byUser.delete(c.user);
    else if (held instanceof Set && held.delete(c) && held.size === 0) this.#byUser.delete(c.user);
  }

  /** This instance's connections of `user`. */
  ofUser(user: string): Iterable<Connection> {
    const held = this.#byUser.get(user);
    return held === undefined ? EMPTY : held instanceof Set ? held : [held];
  }

  /** How many of `user`'s connections are here. */
  countOf(user: string): number {
    const held = this.#byUser.get(user);
    return held === undefined ? 0 : held instanceof Set ? held.size : 1;
  }

  /** What the admin API lists: this instance's connections, or `user`'s. */
  infos(user?: string): ConnectionInfo[] {
    const held = user === undefined ? [...this.#byUser.values()].flatMap((h) => (h instanceof Set ? [...h] : [h])) : [...this.ofUser(user)];
    return held.map((c) => c.info());
  }

  /** Closes every connection of `user` here; answers how many. */
  disconnectUser(user: string, err: ServiceError): number {
    const conns = [...this.ofUser(user)];
    for (const c of conns) c.close(err, false);
    return conns.length;
  }
}

const EMPTY: readonly Connection[] = [];

/** A refusal as the transports answer it. */
export const errorBody = (err: unknown): ErrorBody => (err instanceof ServiceError ? err : new ServiceError("INTERNAL")).toJSON();
