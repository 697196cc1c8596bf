import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer, type WebSocket } from "ws";
import type { Envelope, LocalSink } from "../domain/broadcast.js";
import { CLIENT_ID_PATTERN, USER_ROOM_PREFIX, isUserRoom } from "../domain/names.js";
import { ServiceError } from "../errors.js";
import type { ErrorBody, Expiring, LeftRoom, Welcome, WsRequestId, WsServerFrame } from "../protocol.js";
import { admit, giveBack } from "./admission.js";
import type { Admitted, Connection, ConnectionTransport } from "./connection.js";
import { type Resume, parseResume } from "./recovery.js";
import type { GatewayDeps } from "./gateway.js";
import { refusalHeaders, rejectUpgrade } from "./reject.js";
import { type RequestTarget, decodePathSegment } from "./request-target.js";
import { wholeTextFrame } from "./prebuilt-frames.js";
import { guardSlowClients } from "./slow-clients.js";
import { releaseUpgradeGuard } from "./upgrade-guard.js";
import { renderClosing, renderEcho, renderExpiring, renderJson, renderLeft, renderText, renderWelcome } from "./ws-frames.js";

/** `/ws` broadcasts what the client sends (old service A); `/ws/{id}` echoes it (old service B). */
type Mode = "broadcast" | "echo";
type Format = "text" | "json";

/** Members of each room here, for the sink: the clients of every room at least one is in. */
type RoomIndex = Map<string, Set<Client>>;

/**
 * A /ws client, and its connection's transport. A class, so its methods live
 * on the prototype: an object of closures would cost a closure a method on
 * every connection.
 */
class Client implements ConnectionTransport {
  readonly name = "ws";
  alive = true;
  /** Cut for flooding (or closing): whatever it still sends is dropped unread. */
  dropping = false;
  /** Its rooms (the personal room is not among them); none until it joins one. */
  #rooms: Set<string> | undefined;
  /** Set right after construction (the connection needs its transport). */
  connection!: Connection;

  constructor(
    readonly ws: WebSocket,
    /** ws's own socket: broadcasts are written to it whole (prebuilt-frames.ts). */
    readonly socket: Duplex,
    readonly mode: Mode,
    readonly format: Format,
    private readonly index: RoomIndex,
  ) {}

  /** A frame in JSON mode, or its line in text mode; nothing once the socket is no longer open. */
  send(frame: WsServerFrame, text: string): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.send(this.format === "json" ? renderJson(frame) : text);
  }
  deliver(e: Envelope): void {
    this.send({ type: e.event.event, data: e.event.data } as WsServerFrame, renderText(e.event));
  }
  greet(w: Welcome): void {
    this.send({ type: "welcome", data: w }, renderWelcome(w));
  }
  expiring(n: Expiring): void {
    this.send({ type: "expiring", data: n }, renderExpiring(n));
  }
  left(n: LeftRoom): void {
    this.send({ type: "left", data: n }, renderLeft(n));
  }
  join(room: string): void {
    (this.#rooms ??= new Set()).add(room);
    let members = this.index.get(room);
    if (!members) this.index.set(room, (members = new Set()));
    members.add(this);
  }
  leave(room: string): void {
    if (!this.#rooms?.delete(room)) return;
    const members = this.index.get(room);
    if (members?.delete(this) && members.size === 0) this.index.delete(room);
  }
  /** Out of every room: it has closed. */
  leaveAll(): void {
    for (const room of this.rooms()) this.leave(room);
  }
  has(room: string): boolean {
    return this.#rooms?.has(room) ?? false;
  }
  rooms(): string[] {
    return this.#rooms ? [...this.#rooms] : [];
  }
  queued(): number {
    return this.ws.bufferedAmount;
  }
  open(): boolean {
    return this.ws.readyState === this.ws.OPEN;
  }
  close(err: ServiceError): void {
    this.dropping = true;
    this.send({ type: "closing", data: err.toJSON() }, renderClosing(err.toJSON()));
    // A close reason is at most 123 bytes.
    this.ws.close(err.closeCode, Buffer.from(err.message).subarray(0, 123).toString());
  }
  stopReading(): void {
    this.dropping = true;
    this.ws.pause();
  }
  cut(): void {
    this.ws.terminate();
  }
}

/** An upgrade that passed our checks, on its way through ws's handshake checks and the admission. */
interface Attempt {
  address: string;
  resume: Resume | undefined;
  rooms: string[];
  wanted: string | undefined;
  token: string | undefined;
  mode: Mode;
  format: Format;
  /** Set once admitted; undefined `admitted` is a duplicate id (answered after the upgrade, as service B did). */
  result?: { admitted: Admitted | undefined; id: string };
}

const PATH = /^\/ws(?:\/([^/]*))?\/?$/;
/** A refused frame up to this size is read for its request id; a larger one (a flooder's) is not parsed. */
const MAX_ID_PEEK = 4_096;
const HEARTBEAT_MS = 25_000;

export interface WsGateway {
  /** Answers whether the upgrade was for /ws (and so handled here). */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, target: RequestTarget): boolean;
  sink: LocalSink;
  readonly size: number;
  /** A closer per client, at the drain deadline: 1001, as the old service B. */
  connections(): (() => void)[];
  close(): void;
}

export function createWsGateway(opts: GatewayDeps): WsGateway {
  const { config, log, hub, metrics, origins, refuseNewSession } = opts;
  const clients = new Map<WebSocket, Client>();
  const byRoom: RoomIndex = new Map();

  // Pings find dead peers and keep idle connections alive through proxies.
  const heartbeat = setInterval(() => {
    for (const c of clients.values()) {
      if (!c.alive) {
        c.ws.terminate();
        continue;
      }
      c.alive = false;
      c.ws.ping();
    }
  }, HEARTBEAT_MS);
  heartbeat.unref();

  const slow = guardSlowClients({
    transport: "ws",
    limit: config.maxBufferedBytes,
    log,
    metrics,
    clients: () => clients.values(),
    queued: (c) => c.ws.bufferedAmount,
    idOf: (c) => c.connection.id,
    cut: (c) => c.ws.terminate(),
  });

  const refuse = (socket: Duplex, err: ServiceError) => {
    metrics.refusals.inc({ code: err.code });
    rejectUpgrade(socket, err);
  };

  const sendError = (c: Client, err: ErrorBody, id?: WsRequestId) =>
    c.send({ type: "error", ...(id === undefined ? {} : { id }), data: err }, `Error: ${err.error}`);
  const answer = (c: Client, id: WsRequestId | undefined, data: Record<string, unknown>) =>
    c.send({ type: "ack", ...(id === undefined ? {} : { id }), data: { ok: true, ...data } }, "");

  const rateLimited = new ServiceError("RATE_LIMITED", `at most ${opts.limiter.description}`);

  /** A refusal of what the client sent: answered, not punished (the connection stays open). */
  const refused = (c: Client, id: WsRequestId | undefined) => (err: unknown) => {
    if (!(err instanceof ServiceError)) {
      log.error({ clientId: c.connection.id, err }, "request failed");
      return sendError(c, new ServiceError("INTERNAL").toJSON(), id);
    }
    metrics.refusals.inc({ code: err.code });
    sendError(c, err.toJSON(), id);
  };

  // One listener an event for every client (ws calls it with `this` set to the
  // socket), not closures a connection: at tens of thousands of clients those cost memory.
  function onPong(this: WebSocket): void {
    const c = clients.get(this);
    if (c) c.alive = true;
  }
  function onMessage(this: WebSocket, data: Buffer, isBinary: boolean): void {
    const c = clients.get(this);
    if (!c || c.dropping) return;
    if (isBinary) {
      const err = new ServiceError("UNSUPPORTED_DATA");
      metrics.refusals.inc({ code: err.code });
      this.close(err.closeCode, "binary frames are not supported");
      return;
    }
    const verdict = c.connection.take();
    // Refused: not echoed, not broadcast, answered with the request's id (its client waits on it); on
    // "disconnect" the connection has cut itself.
    if (verdict === "refused")
      return sendError(c, rateLimited.toJSON(), c.format === "json" && data.length <= MAX_ID_PEEK ? parseJsonFrame(data.toString()).id : undefined);
    if (verdict === "disconnect") return;
    const raw = data.toString();
    if (c.mode === "echo") {
      metrics.messagesIn.inc({ transport: "ws" });
      return c.send({ type: "echo", data: { text: raw } }, renderEcho(raw));
    }
    const request = c.format === "json" ? parseJsonFrame(raw) : { type: "message" as const, text: raw, room: undefined, id: undefined };
    const fail = refused(c, request.id);
    try {
      switch (request.type) {
        case "message":
          c.connection.publish(request.text, request.room).catch(fail);
          return;
        case "join":
          c.connection.join(request.room);
          return answer(c, request.id, { room: request.room });
        case "leave":
          c.connection.leave(request.room);
          return answer(c, request.id, { room: request.room });
        case "refresh":
          c.connection
            .refresh(request.token)
            .then(({ expiresAt }) => answer(c, request.id, { expiresAt: expiresAt === undefined ? null : new Date(expiresAt).toISOString() }), fail);
          return;
        case "bad":
          throw new ServiceError("BAD_REQUEST", request.why);
      }
    } catch (err) {
      fail(err);
    }
  }
  function onError(this: WebSocket, err: Error): void {
    log.debug({ clientId: clients.get(this)?.connection.id, err: err.message }, "socket error");
  }
  function onClose(this: WebSocket, code: number): void {
    const c = clients.get(this);
    if (!c) return;
    clients.delete(this);
    c.leaveAll();
    c.connection.end();
    log.debug({ clientId: c.connection.id, code }, "disconnected");
  }

  // Attempts by request, from our checks to ws's callback. What admission
  // took in verifyClient waits here until then; ws can still drop the socket
  // in that gap without calling back (the peer left, the server closed), so
  // the socket's "close" gives it back.
  const attempts = new WeakMap<IncomingMessage, Attempt>();
  const bySocket = new WeakMap<Duplex, IncomingMessage>();
  function releaseUnopened(this: Duplex): void {
    const req = bySocket.get(this);
    const admitted = req && attempts.get(req)?.result?.admitted;
    if (req) attempts.delete(req);
    if (admitted) giveBack(opts, admitted);
  }

  /**
   * ws calls this only once every handshake check of its own (method,
   * headers, key, version) has passed, so nothing is claimed for a handshake
   * that fails. Here the shared admission runs: drain, token, clientId claim.
   */
  const verifyClient = (
    info: { req: IncomingMessage },
    done: (ok: boolean, code?: number, message?: string, headers?: Record<string, string>) => void,
  ): void => {
    const { req } = info;
    const socket = req.socket;
    const attempt = attempts.get(req);
    const deny = (err: ServiceError) => {
      attempts.delete(req);
      done(false, err.status, JSON.stringify(err.toJSON()), refusalHeaders(err));
    };
    if (!attempt) return deny(new ServiceError("INTERNAL"));
    admit(opts, { transport: "ws", address: attempt.address, wanted: attempt.wanted, token: attempt.token }).then(
      (result) => {
        const admitted = result.ok ? result.admitted : undefined;
        if (socket.destroyed) {
          // The peer left while we awaited Redis.
          attempts.delete(req);
          if (admitted) giveBack(opts, admitted);
          return;
        }
        if (!result.ok && result.error.code !== "DUPLICATE_CLIENT_ID") return deny(result.error);
        attempt.result = { admitted, id: admitted?.lease.id ?? attempt.wanted ?? "" };
        bySocket.set(socket, req);
        socket.once("close", releaseUnopened);
        done(true);
      },
      (err: unknown) => {
        log.error({ err }, "admission failed");
        deny(new ServiceError("INTERNAL"));
      },
    );
  };
  // maxPayload makes ws close an oversized frame's connection with 1009 by itself.
  const wss = new WebSocketServer({ noServer: true, maxPayload: config.maxMessageBytes, clientTracking: false, perMessageDeflate: false, verifyClient });
  wss.on("headers", (_headers: string[], req: IncomingMessage) => releaseUpgradeGuard(req.socket));

  const accept = (ws: WebSocket, req: IncomingMessage): void => {
    const attempt = attempts.get(req);
    attempts.delete(req);
    // Nothing may keep the handshake request once the connection is open (about 1.3 KB each).
    bySocket.delete(req.socket);
    req.socket.removeListener("close", releaseUnopened);
    // First of all: a socket without an error listener ends the process on the next bad frame.
    ws.on("error", onError);
    const result = attempt?.result;
    if (!attempt || !result) return void ws.terminate();
    if (!result.admitted) {
      // The old service B's answer to a duplicate id: an error frame, then 1008.
      const err = new ServiceError("DUPLICATE_CLIENT_ID", result.id);
      ws.send(JSON.stringify({ type: "error", code: 1008, message: err.message }));
      ws.close(1008, "duplicate clientId");
      return;
    }
    const client = new Client(ws, req.socket, attempt.mode, attempt.format, byRoom);
    client.connection = hub.open(client, result.admitted, attempt.address);
    clients.set(ws, client);
    log.debug({ clientId: client.connection.id, user: client.connection.user, transport: "ws", mode: attempt.mode }, "connected");
    ws.on("pong", onPong);
    ws.on("message", onMessage);
    ws.on("close", onClose);
    client.connection.start(attempt.resume, attempt.rooms);
  };

  /** The /ws clients `room` (none: everyone) reaches here. */
  const targets = (room: string | undefined): Iterable<Client> | undefined => {
    if (room === undefined) return clients.values();
    if (isUserRoom(room)) return clientsOf(hub.ofUser(room.slice(USER_ROOM_PREFIX.length)));
    return byRoom.get(room);
  };
  function* clientsOf(conns: Iterable<Connection>): Iterable<Client> {
    for (const conn of conns) if (conn.transport instanceof Client) yield conn.transport;
  }

  return {
    handleUpgrade(req, socket, head, target) {
      const match = PATH.exec(target.pathname);
      if (!match) return false;
      // Cheap checks first, answered before any WebSocket exists.
      const wanted = match[1] === undefined ? undefined : decodePathSegment(match[1]);
      const rooms = parseRooms(target.query.rooms, config.maxRoomsPerConnection);
      const refusal =
        refuseNewSession() ??
        (!origins.allows(req.headers.origin)
          ? new ServiceError("ORIGIN_NOT_ALLOWED", req.headers.origin)
          : match[1] !== undefined && (wanted === undefined || !CLIENT_ID_PATTERN.test(wanted))
            ? new ServiceError("INVALID_CLIENT_ID", wanted ?? match[1])
            : rooms instanceof ServiceError
              ? rooms
              : undefined);
      if (refusal) {
        refuse(socket, refusal);
        return true;
      }
      const token = target.query.token ?? /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1];
      attempts.set(req, {
        address: opts.addresses.of(req),
        resume: parseResume(target.query.epoch, target.query.since),
        rooms: rooms as string[],
        wanted,
        token,
        mode: wanted === undefined ? "broadcast" : "echo",
        format: target.query.format === "json" ? "json" : "text",
      });
      wss.handleUpgrade(req, socket, head, accept);
      return true;
    },

    sink: {
      transport: "ws",
      count: (room) => {
        const members = targets(room);
        if (!members) return 0;
        let n = 0;
        for (const _ of members) n++;
        return n;
      },
      deliver(envelope: Envelope): number {
        const { event, room } = envelope;
        const members = targets(room);
        if (!members || clients.size === 0) return 0;
        // Render and frame once per format, not once per client: every client
        // gets the same whole frame in one write. ws's send() would frame it
        // again for each and write header and payload apart; writing to ws's
        // socket ourselves keeps the order with what ws writes (both are
        // synchronous; ws queues nothing without compression), and ws's
        // bufferedAmount (the slow-client limit) counts it.
        let text: Buffer | undefined;
        let json: Buffer | undefined;
        let n = 0;
        for (const c of members) {
          const boundary = c.connection.boundary;
          if (boundary) {
            boundary.hold(envelope); // replaying: sent once the replay is out
            n++;
            continue;
          }
          if (c.ws.readyState !== c.ws.OPEN) continue;
          const frame =
            c.format === "json"
              ? (json ??= wholeTextFrame(renderJson({ type: event.event, data: event.data } as WsServerFrame)))
              : (text ??= wholeTextFrame(renderText(event)));
          c.socket.write(frame);
          n++;
        }
        return n;
      },
    },

    get size() {
      return clients.size;
    },

    connections() {
      return [...clients.values()].map((c) => () => c.ws.close(1001, "server shutting down"));
    },

    close() {
      clearInterval(heartbeat);
      slow.stop();
      for (const c of clients.values()) c.ws.terminate();
      wss.close();
    },
  };
}

/** `?rooms=a,b`: the rooms to be in again (joined before the replay, those it may read). */
function parseRooms(raw: string | undefined, maxRooms: number): string[] | ServiceError {
  if (raw === undefined || raw === "") return [];
  const cap = maxRooms > 0 ? maxRooms : 1_000;
  const rooms = raw.split(",");
  if (rooms.length > cap) return new ServiceError("BAD_REQUEST", `?rooms= names at most ${cap} rooms`);
  return rooms;
}

type Request =
  | { type: "message"; text: unknown; room: unknown; id: WsRequestId | undefined }
  | { type: "join" | "leave"; room: unknown; id: WsRequestId | undefined }
  | { type: "refresh"; token: unknown; id: WsRequestId | undefined }
  | { type: "bad"; why: string; id: WsRequestId | undefined };

const REQUEST_ID = /^[A-Za-z0-9_.:-]{1,64}$/;

/**
 * Total: a JSON-mode frame as a request. `{ "text": ..., "room"?: ... }` or
 * `{ "type": "message", ... }` is a message, `{ "type": "join" | "leave",
 * "room": ... }` and `{ "type": "refresh", "token": ... }` are requests;
 * anything that is not a JSON object with `text` or `type` is the text itself.
 */
function parseJsonFrame(raw: string): Request {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    return { type: "message", text: raw, room: undefined, id: undefined };
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return { type: "message", text: raw, room: undefined, id: undefined };
  const f = parsed as Record<string, unknown>;
  const rawId = f.id;
  const id =
    (typeof rawId === "number" && Number.isSafeInteger(rawId)) || (typeof rawId === "string" && REQUEST_ID.test(rawId)) ? (rawId as WsRequestId) : undefined;
  if (rawId !== undefined && id === undefined) return { type: "bad", why: "id must be a whole number or 1-64 characters of A-Z a-z 0-9 _ . : -", id };
  switch (f.type) {
    case undefined:
      return "text" in f ? { type: "message", text: f.text, room: f.room, id } : { type: "message", text: raw, room: undefined, id };
    case "message":
      return { type: "message", text: f.text, room: f.room, id };
    case "join":
    case "leave":
      return { type: f.type, room: f.room, id };
    case "refresh":
      return { type: "refresh", token: f.token, id };
    default:
      return { type: "bad", why: 'type must be "message", "join", "leave" or "refresh"', id };
  }
}
