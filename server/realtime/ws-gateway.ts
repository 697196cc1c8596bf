import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer, type WebSocket } from "ws";
import type { Envelope } from "../cluster/bus.js";
import type { Lease } from "../cluster/registry.js";
import { CLIENT_ID_PATTERN, ServiceError } from "../errors.js";
import { DRAIN_HEADERS, rejectUpgrade } from "../http/reject.js";
import { type RequestTarget, decodePathSegment } from "../http/request-target.js";
import { releaseUpgradeGuard } from "../http/upgrade-guard.js";
import type { GatewayDeps, LocalSink } from "./domain.js";
import type { Bucket } from "./rate-limit.js";
import { guardSlowClients } from "./slow-clients.js";
import { COMMANDS, type DomainEvent, type Welcome, now, renderEcho, renderJson, renderText, renderWelcome } from "./messages.js";

/** `/ws` broadcasts what the client sends (old service A); `/ws/{id}` echoes it (old service B). */
type Mode = "broadcast" | "echo";
type Format = "text" | "json";

interface Client {
  lease: Lease;
  ws: WebSocket;
  mode: Mode;
  format: Format;
  alive: boolean;
  bucket: Bucket | undefined;
}

const PATH = /^\/ws(?:\/([^/]*))?\/?$/;
const HEARTBEAT_MS = 25_000;

export interface WsGateway {
  /** Answers whether the upgrade was for /ws (and so handled here). */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, target: RequestTarget): boolean;
  sink: LocalSink;
  readonly size: number;
  /** Closes every client with `code` (1001 at the drain deadline). */
  closeAll(code: number, reason: string): void;
  close(): void;
}

export function createWsGateway(opts: GatewayDeps): WsGateway {
  const { config, log, drain, registry, domain, metrics, origins, limiter, verifyToken, full } = opts;
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

  const refuse = (socket: Duplex, err: ServiceError, extraHeaders?: Record<string, string>) => {
    metrics.refusals.inc({ code: err.code });
    rejectUpgrade(socket, err, extraHeaders);
  };

  const send = (c: Client, type: string, data: unknown, text: string) => {
    if (c.ws.readyState === c.ws.OPEN) c.ws.send(c.format === "json" ? renderJson(type, data) : text);
  };

  const rateLimited = new ServiceError("RATE_LIMITED", limiter.description);

  // One listener an event for every client (ws calls it with `this` set to the
  // socket), not closures a connection: at tens of thousands of clients those cost memory.
  function onPong(this: WebSocket): void {
    const c = clients.get(this);
    if (c) c.alive = true;
  }
  function onMessage(this: WebSocket, data: Buffer, isBinary: boolean): void {
    const c = clients.get(this);
    if (!c) return;
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
      if (verdict === "refused") return send(c, "error", rateLimited.toJSON(), `Error: ${rateLimited.message}`);
      metrics.rateLimitDisconnects.inc({ transport: "ws" });
      log.warn({ clientId: c.lease.id, transport: "ws" }, "rate limit: client kept sending while refused; disconnected");
      this.close(rateLimited.closeCode, "rate limited");
      return;
    }
    metrics.messagesIn.inc({ transport: "ws" });
    const raw = data.toString();
    if (c.mode === "echo") {
      send(c, "echo", { text: raw }, renderEcho(raw));
      return;
    }
    const { text, room } = c.format === "json" ? parseJsonFrame(raw) : { text: raw, room: undefined };
    domain.handleClientText({ from: c.lease.id, origin: "ws", text, room }).catch((err: unknown) => {
      if (!(err instanceof ServiceError)) return log.error({ clientId: c.lease.id, err }, "message failed");
      metrics.refusals.inc({ code: err.code });
      // A bad message is answered, not punished: the connection stays open.
      send(c, "error", err.toJSON(), `Error: ${err.message}`);
    });
  }
  function onError(this: WebSocket, err: Error): void {
    log.debug({ clientId: clients.get(this)?.lease.id, err: err.message }, "socket error");
  }
  function onClose(this: WebSocket, code: number): void {
    const c = clients.get(this);
    if (!c) return;
    clients.delete(this);
    registry.release(c.lease);
    log.debug({ clientId: c.lease.id, code }, "disconnected");
  }

  // Between a successful claim (in verifyClient, after ws checked the whole
  // handshake) and ws's callback, the lease lives here, keyed by the upgrading
  // socket. ws can still drop the socket in that gap without calling back
  // (the peer left, the server closed): the socket's "close" gives it back.
  const pending = new WeakMap<Duplex, { lease: Lease | undefined; wanted: string; mode: Mode; format: Format }>();
  function releasePending(this: Duplex): void {
    const p = pending.get(this);
    pending.delete(this);
    if (p?.lease) registry.release(p.lease);
  }

  const admission = new WeakMap<IncomingMessage, { wanted: string | undefined; token: string | undefined; mode: Mode; format: Format }>();

  /**
   * ws calls this only once every handshake check (method, headers, key,
   * version) has passed, so nothing is claimed for a handshake that fails.
   */
  const verifyClient = (info: { req: IncomingMessage }, done: (ok: boolean, code?: number, message?: string, headers?: Record<string, string>) => void): void => {
    const socket = info.req.socket;
    const a = admission.get(info.req);
    admission.delete(info.req);
    const deny = (err: ServiceError, headers: Record<string, string> = {}) => {
      metrics.refusals.inc({ code: err.code });
      done(false, err.status, JSON.stringify(err.toJSON()), { "Content-Type": "application/json", ...headers });
    };
    if (!a) return deny(new ServiceError("INTERNAL"));
    void (async () => {
      let id: string;
      let lease: Lease | undefined;
      try {
        id = await clientIdOf(a);
        lease = await registry.claim(id, "ws");
      } catch (err) {
        if (err instanceof ServiceError) return deny(err);
        log.error({ err }, "admission failed");
        return deny(new ServiceError("INTERNAL"));
      }
      // The peer may have gone, or a drain begun, while we awaited Redis.
      if (socket.destroyed || drain.draining) {
        if (lease) registry.release(lease);
        if (!socket.destroyed) deny(new ServiceError("DRAINING"), DRAIN_HEADERS);
        return;
      }
      pending.set(socket, { lease, wanted: id, mode: a.mode, format: a.format });
      socket.once("close", releasePending);
      done(true);
    })();
  };

  /** The id a /ws connection asks for: its token's subject when tokens are required, else the path's id or a new one. */
  const clientIdOf = async (a: { wanted: string | undefined; token: string | undefined }): Promise<string> => {
    if (!verifyToken) return a.wanted ?? registry.newId();
    const sub = await verifyToken(a.token);
    if (a.wanted !== undefined && a.wanted !== sub) throw new ServiceError("UNAUTHORIZED", "clientId does not match the client token");
    return sub;
  };

  // maxPayload makes ws close an oversized frame's connection with 1009 by itself.
  const wss = new WebSocketServer({ noServer: true, maxPayload: config.maxMessageBytes, clientTracking: false, perMessageDeflate: false, verifyClient });
  wss.on("headers", (_headers: string[], req: IncomingMessage) => releaseUpgradeGuard(req.socket));

  const accept = (ws: WebSocket, req: IncomingMessage): void => {
    const socket = req.socket;
    const p = pending.get(socket);
    pending.delete(socket);
    socket.removeListener("close", releasePending);
    if (!p) return void ws.terminate();
    const { lease, wanted, mode, format } = p;
    if (!lease) {
      // The old service B's answer to a duplicate id: an error frame, then 1008.
      const err = new ServiceError("DUPLICATE_CLIENT_ID", wanted);
      metrics.refusals.inc({ code: err.code });
      ws.send(JSON.stringify({ type: "error", code: 1008, message: err.message }));
      ws.close(1008, "duplicate clientId");
      return;
    }
    const client: Client = { lease, ws, mode, format, alive: true, bucket: limiter.bucket() };
    clients.set(ws, client);
    log.debug({ clientId: lease.id, transport: "ws", mode }, "connected");
    const welcome: Welcome = { clientId: lease.id, instance: config.instanceId, commands: COMMANDS, at: now() };
    send(client, "welcome", welcome, renderWelcome(welcome));

    ws.on("pong", onPong);
    ws.on("message", onMessage);
    ws.on("error", onError);
    ws.on("close", onClose);
  };

  return {
    handleUpgrade(req, socket, head, target) {
      const match = PATH.exec(target.pathname);
      if (!match) return false;
      if (drain.draining) {
        refuse(socket, new ServiceError("DRAINING"), DRAIN_HEADERS);
        return true;
      }
      if (full()) {
        refuse(socket, new ServiceError("OVER_CAPACITY", String(config.maxConnections)), DRAIN_HEADERS);
        return true;
      }
      if (!origins.allows(req.headers.origin)) {
        refuse(socket, new ServiceError("ORIGIN_NOT_ALLOWED", req.headers.origin));
        return true;
      }
      const format: Format = target.query.format === "json" ? "json" : "text";
      const wanted = match[1] === undefined ? undefined : decodePathSegment(match[1]);
      if (match[1] !== undefined && (wanted === undefined || !CLIENT_ID_PATTERN.test(wanted))) {
        refuse(socket, new ServiceError("INVALID_CLIENT_ID", wanted ?? match[1]));
        return true;
      }
      const token = verifyToken ? (target.query.token ?? /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1]) : undefined;
      admission.set(req, { wanted, token, mode: wanted === undefined ? "broadcast" : "echo", format });
      wss.handleUpgrade(req, socket, head, accept);
      return true;
    },

    sink: {
      transport: "ws",
      deliver({ event, room }: Envelope): number {
        // /ws clients join no rooms; room messages are for Socket.IO members.
        if (room !== undefined || clients.size === 0) return 0;
        // Render once per format, not once per client.
        let text: string | undefined;
        let json: string | undefined;
        let n = 0;
        for (const c of clients.values()) {
          if (c.ws.readyState !== c.ws.OPEN) continue;
          c.ws.send(c.format === "json" ? (json ??= renderJson(event.event, event.data)) : (text ??= renderText(event as DomainEvent)));
          n++;
        }
        return n;
      },
    },

    get size() {
      return clients.size;
    },

    closeAll(code, reason) {
      for (const c of clients.values()) c.ws.close(code, reason);
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
