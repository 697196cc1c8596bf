import WebSocket from "ws";
import type { WsClient } from "./clients.js";
import { Inbox } from "./inbox.js";

/**
 * connectWs / wsRefusal (clients.ts) with any `ws` client option: request
 * headers (`Authorization`), `localAddress`, ... The client is the same
 * WsClient: an inbox of text frames, `closed` with code and reason.
 */
export function connectWsWith(url: string, options: WebSocket.ClientOptions = {}): Promise<WsClient> {
  const ws = new WebSocket(url, options);
  const inbox = new Inbox<string>();
  ws.on("message", (data, isBinary) => inbox.push(isBinary ? `<binary ${(data as Buffer).length}>` : data.toString()));
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() }));
  });
  const client: WsClient = {
    ws,
    inbox,
    next: (match = () => true, timeoutMs = 5_000) => inbox.next(match, timeoutMs, "a frame"),
    nextJson: (type, match = () => true, timeoutMs = 5_000) =>
      inbox
        .next(
          (f) => {
            try {
              const p = JSON.parse(f) as { type?: string; data?: unknown };
              return p.type === type && match(p.data as never);
            } catch {
              return false;
            }
          },
          timeoutMs,
          `a JSON frame of type "${type}"`,
        )
        .then((f) => (JSON.parse(f) as { data: never }).data),
    closed,
    close: () => ws.close(),
  };
  return new Promise((resolve, reject) => {
    ws.once("open", () => resolve(client));
    ws.once("unexpected-response", (_req, res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => reject(Object.assign(new Error(`upgrade refused: ${res.statusCode}`), { status: res.statusCode, headers: res.headers, body })));
    });
    ws.once("error", (err) => reject(err));
  });
}

/** The refusal of a /ws upgrade (status, headers, body); fails if it opens. */
export async function wsRefusalWith(
  url: string,
  options: WebSocket.ClientOptions = {},
): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  let client: WsClient;
  try {
    client = await connectWsWith(url, options);
  } catch (err) {
    if (typeof (err as { status?: unknown }).status !== "number") throw err;
    return err as { status: number; headers: Record<string, unknown>; body: string };
  }
  client.close();
  throw new Error(`upgrade of ${url} was accepted but should have been refused`);
}
