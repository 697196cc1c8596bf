import { createHash, timingSafeEqual } from "node:crypto";
import path from "node:path";
import express, { type NextFunction, type Request, type Response } from "express";
import type { Config } from "../config.js";
import type { DrainState } from "../drain.js";
import { ServiceError } from "../errors.js";
import type { Logger } from "../logger.js";
import type { Metrics } from "../metrics.js";
import type { BroadcastDomain } from "../domain/broadcast.js";
import { parseOffset } from "../domain/history.js";
import { type ClientAddresses, isLoopback } from "../realtime/client-address.js";
import type { ConnectionDirectory } from "../realtime/directory.js";
import { CLIENT_ID_PATTERN } from "../domain/names.js";

const validUser = (user: unknown): string => {
  if (typeof user !== "string" || !CLIENT_ID_PATTERN.test(user)) throw new ServiceError("BAD_REQUEST", "a user is 1-64 characters of A-Z a-z 0-9 _ . -");
  return user;
};

/**
 * The HTTP API: the old services' broadcast and client list (admin: bearer
 * token when ADMIN_TOKEN is set), probes, metrics, and the demo page at `/`.
 */
export function createHttpApp(opts: {
  config: Config;
  log: Logger;
  drain: DrainState;
  domain: BroadcastDomain;
  metrics: Metrics;
  addresses: ClientAddresses;
  directory: ConnectionDirectory;
  demoDir: string;
}): express.Express {
  const { config, log, drain, domain, metrics, addresses, directory } = opts;
  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);

  // Secure by default: without a token, the admin endpoints answer only a
  // caller on this machine that came through no proxy (a proxy on loopback
  // would make every stranger look local), unless ADMIN_OPEN says the network is trusted.
  const admin = (req: Request, _res: Response, next: NextFunction) => {
    if (config.adminToken === undefined) {
      if (config.adminOpen || (isLoopback(req.socket.remoteAddress) && !addresses.proxied(req))) return next();
      return next(new ServiceError("ADMIN_DISABLED"));
    }
    const given = /^Bearer (.+)$/.exec(req.get("authorization") ?? "")?.[1] ?? "";
    // Compare digests so neither the length nor the content leaks through timing.
    const digest = (s: string) => createHash("sha256").update(s).digest();
    next(timingSafeEqual(digest(given), digest(config.adminToken)) ? undefined : new ServiceError("UNAUTHORIZED"));
  };

  // A message can be maxMessageBytes of text that JSON escapes up to 6 bytes a byte (\u00XX).
  const json = express.json({ limit: config.maxMessageBytes * 6 + 1024 });

  app.post("/broadcast-to-all", admin, json, async (req, res) => {
    if (!req.is("application/json")) throw new ServiceError("BAD_REQUEST", 'send a JSON body {"message": "..."} with Content-Type: application/json');
    const body: unknown = req.body;
    if (typeof body !== "object" || body === null || Array.isArray(body))
      throw new ServiceError("BAD_REQUEST", 'body must be a JSON object {"message": "..."}');
    const { message, room } = body as { message?: unknown; room?: unknown };
    const chat = domain.message({ from: "http", origin: "http", text: message, room });
    const result = await domain.publishCounted({ event: { event: "message", data: chat }, room: chat.room });
    res.json(result);
  });

  // The old services' list of clientIds, and each connection with its user.
  app.get("/clients", admin, async (_req, res) => {
    const { connections, partial } = await directory.clients();
    res.json({ clients: connections.map((c) => c.clientId), connections, partial });
  });

  app.get("/users/:user/connections", admin, async (req, res) => {
    const user = validUser(req.params.user);
    res.json({ user, ...(await directory.ofUser(user)) });
  });

  // Cuts a user off: every connection on every instance, and with blockSec its new ones for that long.
  app.post("/users/:user/disconnect", admin, json, async (req, res) => {
    const user = validUser(req.params.user);
    const body: unknown = req.body ?? {};
    if (typeof body !== "object" || body === null || Array.isArray(body)) throw new ServiceError("BAD_REQUEST", "body must be a JSON object");
    const { reason, code, blockSec } = body as { reason?: unknown; code?: unknown; blockSec?: unknown };
    if (reason !== undefined && (typeof reason !== "string" || reason.length > 100))
      throw new ServiceError("BAD_REQUEST", "reason must be a string of at most 100 characters");
    if (code !== undefined && !(typeof code === "number" && Number.isInteger(code) && code >= 4000 && code <= 4999)) {
      throw new ServiceError("BAD_REQUEST", "code must be a WebSocket close code from 4000 to 4999");
    }
    if (blockSec !== undefined && !(typeof blockSec === "number" && blockSec >= 0 && blockSec <= 366 * 86_400)) {
      throw new ServiceError("BAD_REQUEST", "blockSec must be a number of seconds from 0 to 31622400");
    }
    res.json(await directory.disconnect(user, { reason, code, blockMs: blockSec === undefined ? undefined : Math.round(blockSec * 1000) }));
  });

  app.delete("/users/:user/block", admin, async (req, res) => {
    const user = validUser(req.params.user);
    await directory.unblock(user);
    res.json({ user, blocked: false });
  });

  // The history, for debugging and for plain HTTP consumers: what came after `since` (default: the start), oldest first.
  app.get("/history", admin, async (req, res) => {
    const head = domain.head();
    if (!head) throw new ServiceError("NOT_FOUND", "/history (HISTORY_SIZE=0: history is off)");
    const since = req.query.since === undefined ? "0-0" : parseOffset(req.query.since);
    if (since === undefined) throw new ServiceError("BAD_REQUEST", "since must be an offset such as 1733011200000-0");
    const limitRaw = req.query.limit === undefined ? "100" : req.query.limit;
    const limit = typeof limitRaw === "string" && /^\d{1,7}$/.test(limitRaw) ? Math.min(Number(limitRaw), config.historySize) : Number.NaN;
    if (!(limit >= 1)) throw new ServiceError("BAD_REQUEST", `limit must be a whole number from 1 to ${config.historySize}`);
    const epoch = typeof req.query.epoch === "string" ? req.query.epoch : head.epoch;
    // Forward from `since`, in pages the size of a replay's budget: page on with the last entry's offset.
    const { entries, complete } = await domain.historyPage(epoch, since, { entries: limit, bytes: config.replayMaxBytes });
    res.json({
      epoch: domain.head()?.epoch ?? head.epoch,
      complete,
      entries: entries.map((e) => ({ ...e.event, ...(e.room !== undefined ? { room: e.room } : {}) })),
    });
  });

  app.get("/healthz", (_req, res) => {
    res.json({ status: "ok", instance: config.instanceId, pid: process.pid, draining: drain.draining });
  });

  app.get("/readyz", (_req, res) => {
    res.status(drain.draining ? 503 : 200).json({ ready: !drain.draining, instance: config.instanceId, draining: drain.draining });
  });

  app.get("/metrics", async (_req, res) => {
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });

  app.use(express.static(path.resolve(opts.demoDir), { index: "index.html" }));

  app.use((req, _res, next) => next(new ServiceError("NOT_FOUND", req.path)));

  // Every error leaves as a status with a JSON body; the server goes on.
  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    if (err instanceof ServiceError) {
      metrics.refusals.inc({ code: err.code });
      res.status(err.status).json(err.toJSON());
      return;
    }
    const status = typeof (err as { status?: unknown }).status === "number" ? (err as { status: number }).status : 500;
    if (status === 413) {
      res.status(413).json(new ServiceError("TOO_LARGE", String(config.maxMessageBytes)).toJSON());
    } else if ((err as { type?: unknown }).type === "entity.parse.failed") {
      res.status(400).json(new ServiceError("BAD_REQUEST", "body is not valid JSON").toJSON());
    } else if (status < 500) {
      res.status(status).json({ error: (err as Error).message, code: "BAD_REQUEST" });
    } else {
      log.error({ err }, "request failed");
      res.status(500).json({ error: "internal error", code: "INTERNAL" });
    }
  });

  return app;
}
