import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer, type WebSocket } from "ws";
import type { Lease } from "../cluster/registry.js";
import type { Envelope, LocalSink } from "../domain/broadcast.js";
import { CLIENT_ID_PATTERN, COMMANDS, now } from "../domain/names.js";
import { ServiceError } from "../errors.js";
import type { ErrorBody, Welcome, WsServerFrame } from "../protocol.js";
import { admit } from "./admission.js";
import { ReplayBoundary, type Resume, parseResume, startConnection } from "./recovery.js";
import type { GatewayDeps } from "./gateway.js";
import type { Bucket } from "./rate-limit.js";
import { refusalHeaders, rejectUpgrade } from "./reject.js";
import { type RequestTarget, decodePathSegment } from "./request-target.js";
import { wholeTextFrame } from "./prebuilt-frames.js";
import { guardSlowClients } from "./slow-clients.js";
import { releaseUpgradeGuard } from "./upgrade-guard.js";
import { renderEcho, renderJson, renderText, renderWelcome } from "./ws-frames.js";

/** `/ws` broadcasts what the client sends (old service A); `/ws/{id}` echoes it (old service B). */
type Mode = "broadcast" | "echo";
type Format = "text" | "json";

interface Client {
  lease: Lease;
  ws: WebSocket;
  /** ws's own socket: broadcasts are written to it whole (prebuilt-frames.ts). */
  socket: Duplex;
  mode: Mode;
  format: Format;
  alive: boolean;
  bucket: Bucket | undefined;
  address: string;
  /** Cut for flooding: whatever it still sends is dropped unread. */
  cut: boolean;
  /** Set while its replay runs: live broadcasts wait at this boundary. */
  boundary: ReplayBoundary | undefined;
}

/** An upgrade that passed our checks, on its way through ws's handshake checks and the admission. */
interface Attempt {
  address: string;
  resume: Resume | undefined;
  wanted: string | undefined;
  token: string | undefined;
  mode: Mode;
  format: Format;
  /** Set once admitted; an undefined lease is a duplicate id (answered after the upgrade, as service B did). */
  admitted?: { lease: Lease | undefined; id: string };
}

const PATH = /^\/ws(?:\/([^/]*))?\/?$/;
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
  const { config, log, registry, domain, metrics, origins, limiter, penalties, refuseNewSession, publishLimits } = opts;
  const clients = new Map<WebSocket, Client>();

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
    idOf: (c) => c.lease.id,
    cut: (c) => c.ws.terminate(),
  });

  const refuse = (socket: Duplex, err: ServiceError) => {
    metrics.refusals.inc({ code: err.code });
    rejectUpgrade(socket, err);
  };

  const send = (c: Client, frame: WsServerFrame, text: string) => {
    if (c.ws.readyState === c.ws.OPEN) c.ws.send(c.format === "json" ? renderJson(frame) : text);
  };
  const sendError = (c: Client, err: ErrorBody) => send(c, { type: "error", data: err }, `Error: ${err.error}`);

  const rateLimited = new ServiceError("RATE_LIMITED", `at most ${limiter.description}`);

  // One listener an event for every client (ws calls it with `this` set to the
  // socket), not closures a connection: at tens of thousands of clients those cost memory.
  function onPong(this: WebSocket): void {
    const c = clients.get(this);
    if (c) c.alive = true;
  }
  function onMessage(this: WebSocket, data: Buffer, isBinary: boolean): void {
    const c = clients.get(this);
    if (!c || c.cut) return;
    if (isBinary) {
      const err = new ServiceError("UNSUPPORTED_DATA");
      metrics.refusals.inc({ code: err.code });
      this.close(err.closeCode, "binary frames are not supported");
      return;
    }
    const verdict = limiter.take(c.bucket);
    if (verdict !== "ok") {
      // Refused: not echoed, not broadcast.
      metrics.rateLimited.inc({ transport: "ws" });
      if (verdict === "refused") return sendError(c, rateLimited.toJSON());
      metrics.rateLimitDisconnects.inc({ transport: "ws" });
      log.warn({ clientId: c.lease.id, transport: "ws", address: c.address }, "rate limit: client kept sending while refused; disconnected");
      c.cut = true;
      penalties.punish(c.address);
      this.close(rateLimited.closeCode, "rate limited");
      return;
    }
    metrics.messagesIn.inc({ transport: "ws" });
    const raw = data.toString();
    if (c.mode === "echo") return send(c, { type: "echo", data: { text: raw } }, renderEcho(raw));
    const { text, room } = c.format === "json" ? parseJsonFrame(raw) : { text: raw, room: undefined };
    const answer = (err: unknown) => {
      if (!(err instanceof ServiceError)) return log.error({ clientId: c.lease.id, err }, "message failed");
      metrics.refusals.inc({ code: err.code });
      // A bad message is answered, not punished: the connection stays open.
      sendError(c, err.toJSON());
    };
    try {
      publishLimits.admit("ws", c.address, text);
    } catch (err) {
      return answer(err);
    }
    domain.handleClientText({ from: c.lease.id, origin: "ws", text, room }).catch(answer);
  }
  function onError(this: WebSocket, err: Error): void {
    log.debug({ clientId: clients.get(this)?.lease.id, err: err.message }, "socket error");
  }
  function onClose(this: WebSocket, code: number): void {
    const c = clients.get(this);
    if (!c) return;
    clients.delete(this);
    c.boundary?.drop();
    registry.release(c.lease);
    log.debug({ clientId: c.lease.id, code }, "disconnected");
  }

  // Attempts by request, from our checks to ws's callback. A lease taken in
  // verifyClient waits here until then; ws can still drop the socket in that
  // gap without calling back (the peer left, the server closed), so the
  // socket's "close" gives it back.
  const attempts = new WeakMap<IncomingMessage, Attempt>();
  const bySocket = new WeakMap<Duplex, IncomingMessage>();
  function releaseUnopened(this: Duplex): void {
    const req = bySocket.get(this);
    const lease = req && attempts.get(req)?.admitted?.lease;
    if (req) attempts.delete(req);
    if (lease) registry.release(lease);
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
        const lease = result.ok ? result.lease : undefined;
        if (socket.destroyed) {
          // The peer left while we awaited Redis.
          attempts.delete(req);
          if (lease) registry.release(lease);
          return;
        }
        if (!result.ok && result.error.code !== "DUPLICATE_CLIENT_ID") return deny(result.error);
        attempt.admitted = { lease, id: result.ok ? result.lease.id : (attempt.wanted ?? "") };
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
    const admitted = attempt?.admitted;
    if (!attempt || !admitted) return void ws.terminate();
    if (!admitted.lease) {
      // The old service B's answer to a duplicate id: an error frame, then 1008.
      const err = new ServiceError("DUPLICATE_CLIENT_ID", admitted.id);
      ws.send(JSON.stringify({ type: "error", code: 1008, message: err.message }));
      ws.close(1008, "duplicate clientId");
      return;
    }
    const { lease } = admitted;
    const { resume } = attempt;
    const client: Client = {
      lease,
      ws,
      socket: req.socket,
      mode: attempt.mode,
      format: attempt.format,
      alive: true,
      bucket: limiter.bucket(),
      address: attempt.address,
      cut: false,
      boundary: undefined,
    };
    clients.set(ws, client);
    log.debug({ clientId: lease.id, transport: "ws", mode: attempt.mode }, "connected");
    ws.on("pong", onPong);
    ws.on("message", onMessage);
    ws.on("close", onClose);

    const deliver = (e: Envelope) => send(client, { type: e.event.event, data: e.event.data } as WsServerFrame, renderText(e.event));
    client.boundary = new ReplayBoundary(deliver, () => (client.boundary = undefined));
    void startConnection({
      domain,
      resume,
      policy: opts.replays,
      base: { clientId: lease.id, instance: config.instanceId, commands: COMMANDS, at: now() },
      // /ws clients are in no rooms: they are entitled to what is not for a room.
      entitled: (e) => e.room === undefined,
      boundary: client.boundary,
      greet: (welcome: Welcome) => send(client, { type: "welcome", data: welcome }, renderWelcome(welcome)),
      send: deliver,
      queued: () => ws.bufferedAmount,
      open: () => ws.readyState === ws.OPEN,
      cut: () => {
        metrics.slowClientsCut.inc({ transport: "ws" });
        log.warn({ clientId: lease.id, transport: "ws" }, "slow client cut: it did not read its replay");
        ws.terminate();
      },
      onError: (err) => log.warn({ clientId: lease.id, err: err.message }, "recovery failed: the client is told recovered: false"),
    });
  };

  return {
    handleUpgrade(req, socket, head, target) {
      const match = PATH.exec(target.pathname);
      if (!match) return false;
      // Cheap checks first, answered before any WebSocket exists.
      const wanted = match[1] === undefined ? undefined : decodePathSegment(match[1]);
      const refusal =
        refuseNewSession() ??
        (!origins.allows(req.headers.origin)
          ? new ServiceError("ORIGIN_NOT_ALLOWED", req.headers.origin)
          : match[1] !== undefined && (wanted === undefined || !CLIENT_ID_PATTERN.test(wanted))
            ? new ServiceError("INVALID_CLIENT_ID", wanted ?? match[1])
            : undefined);
      if (refusal) {
        refuse(socket, refusal);
        return true;
      }
      const token = target.query.token ?? /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1];
      attempts.set(req, {
        address: opts.addresses.of(req),
        resume: parseResume(target.query.epoch, target.query.since),
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
      // /ws clients join no rooms; room messages are for Socket.IO members.
      count: (room) => (room === undefined ? clients.size : 0),
      deliver(envelope: Envelope): number {
        const { event, room } = envelope;
        if (room !== undefined || clients.size === 0) return 0;
        // Render and frame once per format, not once per client: every client
        // gets the same whole frame in one write. ws's send() would frame it
        // again for each and write header and payload apart; writing to ws's
        // socket ourselves keeps the order with what ws writes (both are
        // synchronous; ws queues nothing without compression), and ws's
        // bufferedAmount (the slow-client limit) counts it.
        let text: Buffer | undefined;
        let json: Buffer | undefined;
        let n = 0;
        for (const c of clients.values()) {
          if (c.boundary) {
            c.boundary.hold(envelope); // replaying: sent once the replay is out
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

/** In JSON mode a frame may be `{ "text": ..., "room"?: ... }`; anything else is the text itself. */
function parseJsonFrame(raw: string): { text: unknown; room: unknown } {
  try {
    const parsed: unknown = JSON.parse(raw);
    if (typeof parsed === "object" && parsed !== null && "text" in parsed) {
      const { text, room } = parsed as { text: unknown; room?: unknown };
      return { text, room };
    }
  } catch {
    // not JSON: plain text
  }
  return { text: raw, room: undefined };
}
