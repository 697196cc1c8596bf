import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { DrainState } from "../drain.js";
import { ServiceError } from "../errors.js";
import type { Logger } from "../logger.js";
import type { Metrics } from "../metrics.js";
import type { WsGateway } from "./ws-gateway.js";
import { rejectRequest, rejectUpgrade } from "./reject.js";
import { type RequestTarget, parseTarget } from "./request-target.js";
import { guardUpgrade } from "./upgrade-guard.js";

// Engine.IO's own test (a prefix of the raw target), so we route exactly what it would serve.
const ENGINE_PATH = "/socket.io/";

type RequestListener = (req: IncomingMessage, res: ServerResponse) => void;
type UpgradeListener = (req: IncomingMessage, socket: Duplex, head: Buffer) => void;

/**
 * Parses an Engine.IO target once and hands Engine.IO that very query
 * (`req._query`, which it uses when present), so the drain gate and Engine.IO
 * can never read a different sid from the same request (`sid=x&sid=`).
 */
function engineTarget(req: IncomingMessage): RequestTarget | undefined {
  const target = parseTarget(req.url);
  if (target) (req as IncomingMessage & { _query?: Record<string, string> })._query = { ...target.query };
  return target;
}

/**
 * A request that would open a new Engine.IO session: the Engine.IO endpoint
 * itself (not the client bundle beside it) with no sid, or an empty one
 * (Engine.IO reads both as new).
 */
const opensSession = (target: RequestTarget): boolean => target.pathname === ENGINE_PATH && !target.query.sid;

/**
 * Puts the front door on the HTTP server, once Socket.IO has attached (its
 * listeners serve /socket.io/, the HTTP app the rest):
 * - the drain gate: a new Engine.IO session gets 503 with Retry-After (nginx
 *   then tries a live instance); requests of existing sessions pass;
 * - upgrades go to Engine.IO or the /ws gateway; any other upgrade gets 404,
 *   an unreadable target 400;
 * - the last-resort guard: an exception from any listener becomes a 500 for
 *   that request alone, logged with its stack and counted; malformed HTTP
 *   (`clientError`) is answered and counted. Nothing a client sends ends the process.
 */
export function installFrontDoor(
  server: Server,
  opts: {
    drain: DrainState;
    refuseNewSession: () => ServiceError | undefined;
    ws: WsGateway;
    metrics: Metrics;
    log: Logger;
    app: RequestListener;
    /** Every upgrading socket (the burst writer corks them). */
    onUpgrade?: (socket: Duplex) => void;
  },
): void {
  const { drain, refuseNewSession, ws, metrics, log, app } = opts;
  const requestListeners = server.listeners("request") as RequestListener[];
  const upgradeListeners = server.listeners("upgrade") as UpgradeListener[];
  server.removeAllListeners("request");
  server.removeAllListeners("upgrade");

  const refuse = (err: ServiceError): ServiceError => {
    metrics.refusals.inc({ code: err.code });
    return err;
  };
  const unexpected = (where: string, req: IncomingMessage, err: unknown): void => {
    metrics.unexpectedErrors.inc({ where });
    log.error({ err, where, method: req.method, url: req.url?.slice(0, 256) }, "unexpected error; answered 500 to this request only");
  };

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    // While draining, connections are not kept alive after a response, so a
    // proxy holds none that the final close would cut under a request.
    if (drain.draining) res.setHeader("Connection", "close");
    if (!(req.url ?? "").startsWith(ENGINE_PATH)) {
      if (parseTarget(req.url)) return app(req, res);
      return rejectRequest(res, refuse(new ServiceError("BAD_REQUEST", "malformed request target")));
    }
    const target = engineTarget(req);
    const refusal = !target ? new ServiceError("BAD_REQUEST", "malformed request target") : opensSession(target) ? refuseNewSession() : undefined;
    if (refusal) return rejectRequest(res, refuse(refusal));
    for (const listener of requestListeners) listener.call(server, req, res);
  };

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    guardUpgrade(socket);
    opts.onUpgrade?.(socket);
    const isEngine = (req.url ?? "").startsWith(ENGINE_PATH);
    const target = isEngine ? engineTarget(req) : parseTarget(req.url);
    if (!target) return rejectUpgrade(socket, refuse(new ServiceError("BAD_REQUEST", "malformed request target")));
    if (isEngine) {
      const refusal = opensSession(target) ? refuseNewSession() : undefined;
      if (refusal) return rejectUpgrade(socket, refuse(refusal));
      for (const listener of upgradeListeners) listener.call(server, req, socket, head);
      return;
    }
    if (ws.handleUpgrade(req, socket, head, target)) return;
    rejectUpgrade(socket, refuse(new ServiceError("NOT_FOUND", target.pathname)));
  };

  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    try {
      onRequest(req, res);
    } catch (err) {
      unexpected("request", req, err);
      if (res.headersSent) return void res.destroy();
      rejectRequest(res, new ServiceError("INTERNAL"));
    }
  });

  server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    try {
      onUpgrade(req, socket, head);
    } catch (err) {
      unexpected("upgrade", req, err);
      // Once a library wrote its 101, an HTTP answer would corrupt the stream.
      if ((socket as Socket).bytesWritten > 0) socket.destroy();
      else rejectUpgrade(socket, new ServiceError("INTERNAL"));
    }
  });

  // Node's own answers to malformed HTTP, counted; the socket always ends.
  server.on("clientError", (err: NodeJS.ErrnoException, socket: Duplex) => {
    metrics.malformedRequests.inc();
    if (!socket.writable || err.code === "ECONNRESET") return void socket.destroy();
    const status =
      err.code === "HPE_HEADER_OVERFLOW"
        ? "431 Request Header Fields Too Large"
        : err.code === "ERR_HTTP_REQUEST_TIMEOUT"
          ? "408 Request Timeout"
          : "400 Bad Request";
    socket.once("finish", () => socket.destroy());
    socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  });
}
