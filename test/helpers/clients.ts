import { type Socket, io } from "socket.io-client";
import WebSocket from "ws";
import { Inbox } from "./inbox.js";

export interface IoEvent {
  event: string;
  args: unknown[];
}

export interface IoClient {
  socket: Socket;
  inbox: Inbox<IoEvent>;
  /** Resolves with the first payload of the next `event` (optionally matching). */
  next<T = any>(event: string, match?: (payload: any) => boolean, timeoutMs?: number): Promise<T>;
  close(): void;
}

/**
 * A real socket.io-client that records every event it receives. Resolves after
 * `connect`; rejects with the `connect_error` (message and data) otherwise.
 */
export function connectIo(
  url: string,
  opts: {
    clientId?: string;
    transports?: ("polling" | "websocket")[];
    auth?: Record<string, unknown>;
    reconnection?: boolean;
    extraHeaders?: Record<string, string>;
    /** The source address (WebSocket transport only: engine.io-client passes it to ws). */
    localAddress?: string;
  } = {},
): Promise<IoClient> {
  const socket = io(url, {
    transports: opts.transports ?? ["websocket"],
    auth: opts.auth ?? (opts.clientId ? { clientId: opts.clientId } : {}),
    reconnection: opts.reconnection ?? false,
    forceNew: true,
    timeout: 5_000,
    extraHeaders: opts.extraHeaders,
    ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
  });
  const client = wrapIo(socket);
  return new Promise((resolve, reject) => {
    socket.once("connect", () => resolve(client));
    socket.once("connect_error", (err: Error & { data?: unknown }) => {
      if (opts.reconnection) return; // the caller wants it to keep trying
      socket.close();
      reject(err);
    });
  });
}

export function wrapIo(socket: Socket): IoClient {
  const inbox = new Inbox<IoEvent>();
  socket.onAny((event: string, ...args: unknown[]) => inbox.push({ event, args }));
  return {
    socket,
    inbox,
    next: (event, match = () => true, timeoutMs = 5_000) =>
      inbox.next((e) => e.event === event && match(e.args[0] as never), timeoutMs, `event "${event}"`).then((e) => e.args[0] as never),
    close: () => void socket.close(),
  };
}

export interface WsClient {
  ws: WebSocket;
  inbox: Inbox<string>;
  /** The next text frame (optionally matching). */
  next(match?: (frame: string) => boolean, timeoutMs?: number): Promise<string>;
  /** The next JSON frame of `type` (in ?format=json mode). */
  nextJson<T = any>(type: string, match?: (data: T) => boolean, timeoutMs?: number): Promise<T>;
  closed: Promise<{ code: number; reason: string }>;
  close(): void;
}

/** A real `ws` client; resolves once open, rejects with the HTTP status when the upgrade is refused. */
export function connectWs(url: string, opts: WebSocket.ClientOptions = {}): Promise<WsClient> {
  // Any `ws` client option: origin, request headers (Authorization), localAddress, ...
  const ws = new WebSocket(url, opts);
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

/** Resolves with the error of a refused Socket.IO connection; fails if it connects. */
export async function ioRefusal(url: string, opts: Parameters<typeof connectIo>[1] = {}): Promise<Error & { data?: any; description?: any }> {
  try {
    const c = await connectIo(url, opts);
    c.close();
  } catch (err) {
    return err as Error & { data?: unknown };
  }
  throw new Error("connection was accepted but should have been refused");
}

/** Resolves with the refusal of a /ws upgrade (status, headers, body); fails if it opens. */
export async function wsRefusal(url: string, opts: WebSocket.ClientOptions = {}): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  try {
    const c = await connectWs(url, opts);
    c.close();
  } catch (err) {
    return err as { status: number; headers: Record<string, unknown>; body: string };
  }
  throw new Error("upgrade was accepted but should have been refused");
}
