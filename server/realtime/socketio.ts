import { type Server as HttpServer, type IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { Server, type Socket } from "socket.io";
import { PacketType } from "socket.io-parser";
import type { ServerSideChannel } from "../cluster/bus.js";
import type { Config } from "../config.js";
import type { Envelope, LocalSink } from "../domain/broadcast.js";
import { USER_ROOM_PREFIX, isRoomName, isUserRoom } from "../domain/names.js";
import { ServiceError } from "../errors.js";
import type { ConnectionCount, Metrics } from "../metrics.js";
import type { Ack, ClientToServerEvents, Expiring, InterServerEvents, LeftRoom, ServerToClientEvents, Welcome } from "../protocol.js";
import { admit, giveBack } from "./admission.js";
import type { Admitted, Connection, ConnectionTransport } from "./connection.js";
import { type Resume, parseResume } from "./recovery.js";
import type { GatewayDeps } from "./gateway.js";
import type { OriginPolicy } from "./origin.js";
import type { ClientAddresses } from "./client-address.js";
import { joinPreEncodedFrames, wholeTextFrame } from "./prebuilt-frames.js";
import { guardSlowClients } from "./slow-clients.js";
import { releaseUpgradeGuard } from "./upgrade-guard.js";

/** Our Socket.IO server and sockets, typed by the protocol's event maps. */
export type IoServer = Server<ClientToServerEvents, ServerToClientEvents, InterServerEvents, SocketData>;
type IoSocket = Socket<ClientToServerEvents, ServerToClientEvents, InterServerEvents, SocketData>;
type AckFn = (answer: Ack<Record<string, unknown>>) => void;

const NO_HEADERS: IoSocket["handshake"]["headers"] = Object.freeze({});
const NO_QUERY: IoSocket["handshake"]["query"] = Object.freeze({});
const NO_AUTH: IoSocket["handshake"]["auth"] = Object.freeze({});

function emitTo(socket: IoSocket, e: Envelope): void {
  if (e.event.event === "message") socket.emit("message", e.event.data);
  else socket.emit("notification", e.event.data);
}

/** Client room names live apart from Socket.IO's per-socket rooms, so no client can join another's private room. */
const ROOM_KEY = "room:";
export const roomKey = (room: string): string => `${ROOM_KEY}${room}`;

/** Engine.IO session ids start with this, so nginx can route a session to its owner. */
export const sidPrefix = (instanceId: string): string => instanceId.replace(/[^A-Za-z0-9-]/g, "-");

export interface SocketIoGateway {
  io: IoServer;
  sink: LocalSink;
  /** Open sockets by transport, for metrics. */
  connectionsByTransport(): ConnectionCount[];
  /** A closer per socket, at the drain deadline: its transport, so socket.io-client reconnects by itself (to a live instance). */
  connections(): (() => void)[];
  /** Stops the gateway's timers. */
  close(): void;
}

/** The Socket.IO server on `httpServer`, with our origin policy, limits and sticky session ids. */
export function createIo(
  httpServer: HttpServer,
  opts: { config: Config; metrics: Metrics; origins: OriginPolicy; addresses: ClientAddresses; adapter?: Parameters<Server["adapter"]>[0] },
): IoServer {
  const { config, metrics, origins, addresses } = opts;
  const io: IoServer = new Server(httpServer, {
    path: "/socket.io",
    serveClient: true,
    // Room for the JSON framing around a message of the largest size.
    maxHttpBufferSize: config.maxMessageBytes * 2 + 4096,
    // The upgrade listener is ours (front-door.ts): never let Engine.IO destroy /ws upgrades.
    destroyUpgrade: false,
    // Engine.IO's default, stated because the direct broadcast write relies on
    // it: with compression ws would queue frames it is deflating, and a frame
    // written past that queue could overtake them.
    perMessageDeflate: false,
    cors: {
      origin: (origin, cb) => cb(null, origins.allows(origin)),
    },
    allowRequest: (req, cb) => {
      const ok = origins.allows(req.headers.origin);
      if (!ok) metrics.refusals.inc({ code: "ORIGIN_NOT_ALLOWED" });
      cb(ok ? null : `origin ${req.headers.origin} is not allowed`, ok);
    },
    ...(opts.adapter ? { adapter: opts.adapter } : {}),
  });

  const prefix = sidPrefix(config.instanceId);
  const baseGenerateId = io.engine.generateId.bind(io.engine);
  io.engine.generateId = (req) => `${prefix}.${baseGenerateId(req) as string}`;

  // The handshake request (headers and all) is not needed once a session is
  // open: drop every reference to it, about 1.3 KB on every idle connection.
  // Engine.IO keeps it in two places: the session's `request`, and the
  // response object of a WebSocket upgrade, which lives as long as the TCP
  // socket. That one is only written by middlewares (setHeader); "headers"
  // comes after all of them, just before the 101.
  // The response object also relays the socket's "close" (for middlewares
  // like pino-http; we have none): a once-listener that holds the response,
  // an EventEmitter, on the socket for its whole life, about 400 bytes a
  // connection. It was added just before the middlewares ran; found by its
  // source, so another Engine.IO version at worst keeps it.
  const upgradeResponses = new WeakMap<IncomingMessage, { res: { req: unknown }; relay: ((...args: unknown[]) => void) | undefined }>();
  io.engine.use((req: IncomingMessage, res: unknown, next: () => void) => {
    if (!(res instanceof ServerResponse)) {
      const relay = req.socket.rawListeners("close").findLast((l) => isCloseRelay((l as { listener?: unknown }).listener)) as
        | ((...args: unknown[]) => void)
        | undefined;
      upgradeResponses.set(req, { res: res as { req: unknown }, relay });
    }
    next();
  });
  io.engine.on("headers", (_headers: unknown, req: IncomingMessage) => {
    const upgrade = upgradeResponses.get(req);
    if (upgrade) {
      upgrade.res.req = null;
      if (upgrade.relay) req.socket.removeListener("close", upgrade.relay);
    }
    releaseUpgradeGuard(req.socket);
  });
  // A session that has not connected to the namespace in time (a bare
  // handshake) is closed, discarding its transport: Socket.IO's own timeout
  // (45 s) would leave a polling session closing for 30 s more, holding a
  // MAX_CONNECTIONS slot all along. No listener of ours stays on a session.
  const unconnected = new WeakMap<object, NodeJS.Timeout>();
  io.engine.on("connection", (raw: EngineSession) => {
    // Read while the request is still there (its X-Forwarded-For, behind
    // nginx), into the property Socket.IO makes `handshake.address` from.
    if (raw.request) raw.remoteAddress = addresses.of(raw.request);
    raw.request = null;
    const timer = setTimeout(() => {
      unconnected.delete(raw);
      if (raw.readyState === "open") raw.close(true);
    }, config.connectTimeoutMs);
    timer.unref();
    unconnected.set(raw, timer);
  });
  io.on("connection", (socket) => {
    clearTimeout(unconnected.get(socket.conn));
    unconnected.delete(socket.conn);
  });
  joinPreEncodedFrames(io.of("/").adapter);
  return io;
}

/** The server's inter-server channel, as the cluster bus uses it (the bus is generic; its events are InterServerEvents). */
export function serverSideChannel(io: IoServer): ServerSideChannel {
  return {
    serverSideEmit: (event, ...args) => io.serverSideEmit(event as keyof InterServerEvents, ...(args as [never])),
    on: (event, listener) => io.on(event as keyof InterServerEvents, listener as (arg: unknown) => void),
    serverCount: () => io.of("/").adapter.serverCount(),
  };
}

/** What the Engine.IO "connection" event gives, as far as we use it (its session). */
interface EngineSession {
  request: IncomingMessage | null;
  remoteAddress: string;
  readyState: string;
  close(discard: boolean): void;
}

/** Engine.IO's WebSocketResponse relay: `socket.once("close", () => this.emit("close"))`. */
const isCloseRelay = (fn: unknown): boolean => typeof fn === "function" && fn.toString().replace(/\s/g, "") === '()=>this.emit("close")';

/** What we keep on each Socket.IO socket (`socket.data`). */
export interface SocketData {
  /** Set on "connection": the transport-neutral connection (connection.ts). */
  connection: Connection;
  /** From the namespace middleware until "connection": what admission took, where to resume, which rooms to rejoin. */
  start?: { admitted: Admitted; address: string; resume: Resume | undefined; rooms: string[] };
}

/** Namespace middleware (drain, token, clientId) and the event handlers of `/`: a translation of Socket.IO events to the connection. */
export function createSocketIoGateway(io: IoServer, opts: GatewayDeps): SocketIoGateway {
  const { config, log, hub, metrics } = opts;

  // Engine.IO sessions with a CONNECT to `/` pending or open. Socket.IO itself
  // ignores a CONNECT once a socket is open, but not while our (async)
  // admission runs: each would become a socket of its own.
  const connecting = new WeakSet<object>();
  const alreadyConnecting = new ServiceError("BAD_REQUEST", "this session already has a connection to / (one CONNECT a session)");

  io.use((socket, next) => {
    const client = socket.client;
    if (connecting.has(client)) {
      metrics.refusals.inc({ code: alreadyConnecting.code });
      return next(alreadyConnecting);
    }
    const auth = parseAuth(socket.handshake.auth, config.maxRoomsPerConnection);
    // Only what was parsed is kept: whatever else the CONNECT carried goes now.
    socket.handshake.auth = NO_AUTH;
    if (auth instanceof ServiceError) {
      metrics.refusals.inc({ code: auth.code });
      return next(auth);
    }
    connecting.add(client);
    const address = socket.handshake.address;
    const refused = (err: Error) => {
      connecting.delete(client);
      next(err);
    };
    admit(opts, { transport: "socket.io", address, wanted: auth.clientId, token: auth.token }).then(
      (result) => {
        if (!result.ok) return refused(result.error);
        // The client may have gone while we awaited Redis: then it never connects
        // and "disconnect" never fires. Otherwise Socket.IO connects it on the next tick.
        if (socket.conn.readyState !== "open") {
          giveBack(opts, result.admitted);
          return refused(new Error("client left during the handshake"));
        }
        const start = { admitted: result.admitted, address, resume: auth.resume, rooms: auth.rooms };
        socket.data.start = start;
        next();
        // Socket.IO connects it on the next tick, or drops it silently if its session closed
        // meanwhile: then "connection" never came, and what admission took is given back here.
        setImmediate(() => {
          if (socket.data.start !== start) return;
          socket.data.start = undefined;
          connecting.delete(client);
          giveBack(opts, start.admitted);
        });
      },
      (err: unknown) => {
        log.error({ err }, "admission failed");
        refused(new ServiceError("INTERNAL"));
      },
    );
  });

  type Work = (c: Connection, ...args: unknown[]) => Promise<Record<string, unknown> | undefined> | Record<string, unknown> | undefined;
  // One listener an event for every socket (Socket.IO calls it with `this` set
  // to the socket), not closures a connection: at tens of thousands of
  // sockets those cost memory. The ack, when given, answers { ok, ... }.
  const listener = (event: string, work: Work) =>
    async function (this: IoSocket, ...args: unknown[]): Promise<void> {
      const c = this.data.connection;
      const last = args[args.length - 1];
      const ack: AckFn | undefined = typeof last === "function" ? (args.pop() as AckFn) : undefined;
      try {
        const extra = await work(c, ...args);
        ack?.({ ok: true, ...(extra ?? {}) });
      } catch (err) {
        if (err instanceof ServiceError) {
          metrics.refusals.inc({ code: err.code });
          ack?.({ ok: false, error: err.message, code: err.code });
        } else {
          log.error({ clientId: c.id, err, event }, "handler failed");
          ack?.({ ok: false, ...new ServiceError("INTERNAL").toJSON() });
        }
      }
    };

  const listeners = {
    message: listener("message", async (c, payload) => {
      const { text, room } =
        typeof payload === "object" && payload !== null ? (payload as { text?: unknown; room?: unknown }) : { text: payload, room: undefined };
      await c.publish(text, room);
      return undefined;
    }),
    join: listener("join", (c, room) => {
      c.join(room);
      return { room };
    }),
    leave: listener("leave", (c, room) => {
      c.leave(room);
      return { room };
    }),
    // The demo page's status button: the same notification as sending "ping", without the chat line.
    status: listener("status", async (c) => {
      await c.status();
      return undefined;
    }),
    refresh: listener("refresh", async (c, token) => {
      const { expiresAt } = await c.refresh(token);
      return { expiresAt: expiresAt === undefined ? null : new Date(expiresAt).toISOString() };
    }),
  };

  const byEvent = new Map<string, (this: IoSocket, ...args: unknown[]) => Promise<void>>(Object.entries(listeners));
  const rateLimited = new ServiceError("RATE_LIMITED", `at most ${opts.limiter.description}`);
  function dispatch(this: IoSocket, event: string, ...args: unknown[]): void {
    // Packets already read when the server disconnected it still arrive: drop them.
    if (!this.connected) return;
    const verdict = this.data.connection.take();
    if (verdict === "ok") return void byEvent.get(event)?.apply(this, args);
    // Refused: not handled, not broadcast; answered when the client asked for an ack.
    const ack = args[args.length - 1];
    // On "disconnect" the connection has cut itself.
    if (typeof ack === "function") (ack as AckFn)({ ok: false, ...rateLimited.toJSON() });
  }

  function onDisconnect(this: IoSocket, reason: string): void {
    connecting.delete(this.client);
    const c = this.data.connection;
    c.end();
    log.debug({ clientId: c.id, reason }, "disconnected");
  }

  io.on("connection", (socket: IoSocket) => {
    const start = socket.data.start!;
    socket.data.start = undefined;
    const c = hub.open(new SocketTransport(socket), start.admitted, start.address);
    socket.data.connection = c;
    log.debug({ clientId: c.id, user: c.user, transport: socket.conn.transport.name }, "connected");
    // Without the request, Socket.IO gave the handshake fresh empty headers and query: share one.
    socket.handshake.headers = NO_HEADERS;
    socket.handshake.query = NO_QUERY;
    // One catch-all listener array entry instead of five listeners a socket.
    socket.onAny(dispatch);
    socket.on("disconnect", onDisconnect);
    // Rooms sent back by a reconnecting client are joined before its replay, so their messages are replayed too.
    c.start(start.resume, start.rooms);
  });

  const slow = guardSlowClients({
    transport: "socket.io",
    limit: config.maxBufferedBytes,
    log,
    metrics,
    clients: () => io.of("/").sockets.values(),
    queued: queuedBytes,
    idOf: (socket) => socket.data.connection?.id,
    cut: cutConnection,
  });

  const nsp = io.of("/");
  /** The sockets of `room` (none: everyone) here: a personal room's from the hub, the others' from the adapter. */
  const targets = (room: string | undefined): Iterable<IoSocket> | undefined => {
    if (room === undefined) return nsp.sockets.values();
    if (isUserRoom(room)) return socketsOf(hub.ofUser(room.slice(USER_ROOM_PREFIX.length)));
    const ids = nsp.adapter.rooms.get(roomKey(room));
    return ids && socketsIn(ids);
  };
  function* socketsIn(ids: Set<string>): Iterable<IoSocket> {
    for (const id of ids) {
      const socket = nsp.sockets.get(id);
      if (socket) yield socket;
    }
  }
  function* socketsOf(conns: Iterable<Connection>): Iterable<IoSocket> {
    for (const c of conns) if (c.transport instanceof SocketTransport) yield c.transport.socket;
  }
  const members = (room?: string): number => {
    if (room === undefined) return nsp.sockets.size;
    if (isUserRoom(room)) {
      let n = 0;
      for (const _ of socketsOf(hub.ofUser(room.slice(USER_ROOM_PREFIX.length)))) n++;
      return n;
    }
    return nsp.adapter.rooms.get(roomKey(room))?.size ?? 0;
  };
  const sink: LocalSink = {
    transport: "socket.io",
    count: members,
    deliver(envelope: Envelope): number {
      const { room } = envelope;
      const sockets = targets(room);
      if (!sockets) return 0;
      const { event, data } = envelope.event;
      // The broadcast's whole WebSocket frame, built once: a WebSocket client
      // with nothing of Engine.IO's queued or in flight gets it in one write
      // to its socket (as /ws does). The others (polling, a write in flight,
      // mid-upgrade) get it through Socket.IO in one broadcast, encoded once.
      let frame: Buffer | undefined | null = null;
      const viaEngine: string[] = [];
      let direct = 0;
      let n = 0;
      for (const socket of sockets) {
        n++;
        // Still replaying: it holds the broadcast until its replay is out.
        const boundary = socket.data.connection?.boundary;
        if (boundary) {
          boundary.hold(envelope);
          continue;
        }
        if (frame === null) frame = wholeSocketIoFrame(io, event, data);
        const tcp = frame && directSocket(socket);
        if (tcp) {
          tcp.write(frame);
          direct++;
        } else viaEngine.push(socket.id);
      }
      if (direct > 0) metrics.socketIoFrames.inc({ path: "direct" }, direct);
      if (viaEngine.length > 0) {
        metrics.socketIoFrames.inc({ path: "engine.io" }, viaEngine.length);
        const to = io.local.to(viaEngine);
        if (event === "message") to.emit("message", data);
        else to.emit("notification", data);
      }
      return n;
    },
  };

  return {
    io,
    sink,
    connectionsByTransport() {
      let polling = 0;
      for (const socket of nsp.sockets.values()) if (socket.conn.transport.name === "polling") polling++;
      const all = nsp.sockets.size;
      return [
        { transport: "socket.io", via: "polling", count: polling },
        { transport: "socket.io", via: "websocket", count: all - polling },
      ];
    },
    connections() {
      return [...nsp.sockets.values()].map((socket) => () => socket.conn.close());
    },
    close() {
      slow.stop();
    },
  };
}

/**
 * A Socket.IO socket as a connection's transport. A class, so its methods
 * live on the prototype: an object of closures would cost a closure a method
 * on every connection.
 */
class SocketTransport implements ConnectionTransport {
  readonly name = "socket.io";

  constructor(readonly socket: IoSocket) {}

  deliver(e: Envelope): void {
    emitTo(this.socket, e);
  }
  greet(w: Welcome): void {
    this.socket.emit("welcome", w);
  }
  expiring(n: Expiring): void {
    this.socket.emit("expiring", n);
  }
  left(n: LeftRoom): void {
    this.socket.emit("left", n);
  }
  join(room: string): void {
    this.socket.join(roomKey(room));
  }
  leave(room: string): void {
    this.socket.leave(roomKey(room));
  }
  has(room: string): boolean {
    return this.socket.rooms.has(roomKey(room));
  }
  rooms(): string[] {
    const rooms: string[] = [];
    for (const key of this.socket.rooms) if (key.startsWith(ROOM_KEY)) rooms.push(key.slice(ROOM_KEY.length));
    return rooms;
  }
  queued(): number {
    return queuedBytes(this.socket);
  }
  open(): boolean {
    return this.socket.connected;
  }
  close(err: ServiceError, reconnect: boolean): void {
    this.socket.emit("closing", err.toJSON());
    // Closing the transport (not the socket) makes socket.io-client reconnect by itself.
    if (reconnect) this.socket.conn.close();
    else this.socket.disconnect(true);
  }
  cut(): void {
    cutConnection(this.socket);
  }
  stopReading(): void {
    // Socket.IO has closed it (disconnect); Engine.IO reads on until the cut.
  }
}

/**
 * Engine.IO's connection and its WebSocket transport, as far as we read them
 * (no public accessor): the unsent data (slow clients), the WebSocket (cut),
 * and whether a broadcast may be written directly.
 */
interface EngineConnection {
  readyState?: string;
  writeBuffer?: { data?: unknown }[];
  transport?: {
    name?: string;
    writable?: boolean;
    socket?: { readyState?: number; bufferedAmount?: number; terminate?: () => void; _socket?: Duplex };
  };
}

/**
 * Bytes queued here for a Socket.IO client: Engine.IO's packet queue (where
 * frames wait while a write is in flight) and what its WebSocket holds. Read
 * defensively: if Engine.IO renames them this reads 0, and the slow-client
 * test fails.
 */
function queuedBytes(socket: IoSocket): number {
  const conn = socket.conn as unknown as EngineConnection;
  let bytes = conn.transport?.socket?.bufferedAmount ?? 0;
  for (const packet of conn.writeBuffer ?? []) {
    const data = packet.data;
    bytes += typeof data === "string" ? data.length : ((data as { byteLength?: number } | undefined)?.byteLength ?? 0);
  }
  return bytes;
}

/**
 * The TCP socket of a Socket.IO client that may take a broadcast's frame
 * directly: an open WebSocket session with nothing of Engine.IO's queued or
 * in flight (its transport is writable only when its last write completed),
 * so the frame cannot overtake anything Engine.IO sent. Otherwise undefined:
 * Engine.IO sends it, after what it holds. Read defensively: if Engine.IO or
 * ws rename these, every broadcast goes through Engine.IO as before.
 */
function directSocket(socket: IoSocket): Duplex | undefined {
  const conn = socket.conn as unknown as EngineConnection;
  const transport = conn.transport;
  if (conn.readyState !== "open" || transport?.name !== "websocket" || transport.writable !== true || conn.writeBuffer?.length !== 0) return undefined;
  const ws = transport.socket;
  const tcp = ws?.readyState === 1 ? ws._socket : undefined;
  return tcp && !tcp.destroyed ? tcp : undefined;
}

/**
 * The WebSocket frame Engine.IO would send for `emit(event, data)` on `/`:
 * Socket.IO's encoding (its own encoder) behind Engine.IO's "message" type
 * ("4"), as socket.io-adapter pre-encodes a broadcast. Undefined when the
 * packet does not encode to one text frame (binary attachments).
 */
function wholeSocketIoFrame(io: IoServer, event: string, data: unknown): Buffer | undefined {
  const encoded = io.encoder.encode({ type: PacketType.EVENT, nsp: "/", data: [event, data] });
  return encoded.length === 1 && typeof encoded[0] === "string" ? wholeTextFrame(`4${encoded[0]}`) : undefined;
}

/** Drops the connection at once; socket.io-client sees "transport close" and reconnects by itself. */
function cutConnection(socket: IoSocket): void {
  const ws = (socket.conn as unknown as EngineConnection).transport?.socket;
  if (typeof ws?.terminate === "function") ws.terminate();
  else socket.conn.close(true);
}

/** What a Socket.IO CONNECT's `auth` may carry, parsed and bounded; anything else in it is dropped. */
interface ParsedAuth {
  clientId: unknown;
  token: unknown;
  resume: Resume | undefined;
  rooms: string[];
}

/** Longest client token accepted (a JWT with many claims is a few KiB). */
const MAX_TOKEN_CHARS = 8_192;
/** Largest `auth` accepted, as JSON, besides its rooms: a token, a clientId and an offset fit well. */
const MAX_AUTH_CHARS = 16_384;
/** JSON of one room name in `auth.rooms` at most. */
const ROOM_CHARS = 67;

/** Total: the handshake's `auth` (any JSON) as what we use, or a coded refusal. */
function parseAuth(raw: unknown, maxRooms: number): ParsedAuth | ServiceError {
  if (raw === undefined || raw === null) return { clientId: undefined, token: undefined, resume: undefined, rooms: [] };
  if (typeof raw !== "object" || Array.isArray(raw)) return new ServiceError("BAD_REQUEST", "auth must be an object");
  const auth = raw as Record<string, unknown>;
  const cap = maxRooms > 0 ? maxRooms : 1_000;
  let size: number;
  try {
    size = JSON.stringify(auth).length;
  } catch {
    size = Number.POSITIVE_INFINITY;
  }
  const maxSize = MAX_AUTH_CHARS + cap * ROOM_CHARS;
  if (size > maxSize) return new ServiceError("BAD_REQUEST", `auth is larger than ${maxSize} characters of JSON`);
  if (typeof auth.token === "string" && auth.token.length > MAX_TOKEN_CHARS) {
    return new ServiceError("BAD_REQUEST", `auth.token is longer than ${MAX_TOKEN_CHARS} characters`);
  }
  if (auth.rooms !== undefined && (!Array.isArray(auth.rooms) || auth.rooms.length > cap)) {
    return new ServiceError("BAD_REQUEST", `auth.rooms must be an array of at most ${cap} room names`);
  }
  const rooms = ((auth.rooms as unknown[] | undefined) ?? []).filter(isRoomName);
  return { clientId: auth.clientId, token: auth.token, resume: parseResume(auth.epoch, auth.offset), rooms };
}
