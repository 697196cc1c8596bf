import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import type { DrainState } from "../drain.js";
import { ServiceError } from "../errors.js";
import type { Metrics } from "../metrics.js";
import type { WsGateway } from "../realtime/ws-gateway.js";
import { DRAIN_HEADERS, rejectUpgrade } from "./reject.js";
import { guardUpgrade } from "./upgrade-guard.js";

const ENGINE_PATH = "/socket.io/";

/** A request that would open a new Engine.IO session: the handshake, polling or WebSocket, without a sid. */
function opensSession(req: IncomingMessage): boolean {
  const url = new URL(req.url ?? "/", "http://localhost");
  return url.pathname === ENGINE_PATH && !url.searchParams.has("sid");
}

/**
 * Puts the drain gate in front of everything on the HTTP server, once Socket.IO
 * has attached (its listeners serve /socket.io/, the HTTP app the rest): while draining, a new Engine.IO session gets 503 with
 * Retry-After (nginx then tries a live instance; socket.io-client retries
 * with back-off) and requests of existing sessions pass. Upgrades go to
 * Engine.IO or the /ws gateway; any other upgrade gets 404.
 */
export function installFrontDoor(
  server: Server,
  opts: { drain: DrainState; ws: WsGateway; metrics: Metrics; app: (req: IncomingMessage, res: ServerResponse) => void },
): void {
  const { drain, ws, metrics, app } = opts;
  const requestListeners = server.listeners("request") as ((req: IncomingMessage, res: ServerResponse) => void)[];
  const upgradeListeners = server.listeners("upgrade") as ((req: IncomingMessage, socket: Duplex, head: Buffer) => void)[];
  server.removeAllListeners("request");
  server.removeAllListeners("upgrade");

  const draining = new ServiceError("DRAINING");
  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    // While draining, connections are not kept alive after a response, so a
    // proxy holds none that the final close would cut under a request.
    if (drain.draining) res.setHeader("Connection", "close");
    if (!(req.url ?? "").startsWith(ENGINE_PATH)) return app(req, res);
    if (drain.draining && opensSession(req)) {
      metrics.refusals.inc({ code: draining.code });
      res.writeHead(draining.status, { "Content-Type": "application/json", Connection: "close", ...DRAIN_HEADERS });
      res.end(JSON.stringify(draining.toJSON()));
      return;
    }
    for (const listener of requestListeners) listener.call(server, req, res);
  });

  server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    guardUpgrade(socket);
    if ((req.url ?? "").startsWith(ENGINE_PATH)) {
      if (drain.draining && opensSession(req)) {
        metrics.refusals.inc({ code: draining.code });
        rejectUpgrade(socket, draining, DRAIN_HEADERS);
        return;
      }
      for (const listener of upgradeListeners) listener.call(server, req, socket, head);
      return;
    }
    if (ws.handleUpgrade(req, socket, head)) return;
    rejectUpgrade(socket, new ServiceError("NOT_FOUND", (req.url ?? "").split("?")[0]));
  });
}
