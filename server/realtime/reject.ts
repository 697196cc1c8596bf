import { STATUS_CODES } from "node:http";
import type { Duplex } from "node:stream";
import type { ServiceError } from "../errors.js";

/** Retry-After on every drain refusal: clients and nginx may try again at once, elsewhere. */
export const DRAIN_HEADERS = { "Retry-After": "1" } as const;

/**
 * Answers an HTTP upgrade that we refuse, before any WebSocket exists: a plain
 * HTTP response with a JSON body, then the socket is closed.
 */
export function rejectUpgrade(socket: Duplex, err: ServiceError, extraHeaders: Record<string, string> = {}): void {
  if (socket.destroyed) return;
  const body = JSON.stringify(err.toJSON());
  const headers = {
    "Content-Type": "application/json",
    "Content-Length": String(Buffer.byteLength(body)),
    Connection: "close",
    ...extraHeaders,
  };
  const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}`);
  socket.end(`HTTP/1.1 ${err.status} ${STATUS_CODES[err.status] ?? "Error"}\r\n${lines.join("\r\n")}\r\n\r\n${body}`);
}
