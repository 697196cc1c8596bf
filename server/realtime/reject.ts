import { STATUS_CODES, type ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import type { ServiceError } from "../errors.js";

/**
 * The headers of every refusal: JSON, and on a 503 (draining, full)
 * Retry-After, so clients and nginx may try again at once, elsewhere.
 */
export function refusalHeaders(err: ServiceError): Record<string, string> {
  return { "Content-Type": "application/json", ...(err.status === 503 ? { "Retry-After": "1" } : {}) };
}

/** Answers a plain HTTP request that we refuse: the status, a JSON body, and no keep-alive. */
export function rejectRequest(res: ServerResponse, err: ServiceError): void {
  res.writeHead(err.status, { ...refusalHeaders(err), Connection: "close" }).end(JSON.stringify(err.toJSON()));
}

/** How long a refused upgrade's peer has to close after our answer before its socket is cut. */
export const REFUSED_UPGRADE_LINGER_MS = 5_000;

/**
 * Answers an HTTP upgrade that we refuse, before any WebSocket exists: a plain
 * HTTP response with a JSON body, then the socket is closed. The socket of an
 * upgrade is not read by Node's HTTP server any more, so it would never see
 * the peer's close: it reads (and drops) whatever comes, so the peer's close
 * frees it, and a peer that never closes is cut after REFUSED_UPGRADE_LINGER_MS.
 */
export function rejectUpgrade(socket: Duplex, err: ServiceError): void {
  if (socket.destroyed) return;
  const body = JSON.stringify(err.toJSON());
  const headers = { ...refusalHeaders(err), "Content-Length": String(Buffer.byteLength(body)), Connection: "close" };
  const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}`);
  socket.resume();
  const cut = setTimeout(() => socket.destroy(), REFUSED_UPGRADE_LINGER_MS).unref();
  socket.once("close", () => clearTimeout(cut));
  socket.end(`HTTP/1.1 ${err.status} ${STATUS_CODES[err.status] ?? "Error"}\r\n${lines.join("\r\n")}\r\n\r\n${body}`);
}
