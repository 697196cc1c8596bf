import http from "node:http";
import { Decoder, PacketType } from "socket.io-parser";
import { type RawResponse, RawConnection, buildRequest, closeFrame, encodeFrame, upgradeHeaders } from "./raw-http.js";

/**
 * Engine.IO v4 sessions spoken by hand, packet by packet (polling POSTs of
 * several packets, WebSocket frames), and plain HTTP from a chosen source
 * address with headers sent as listed: for what no client library sends
 * (several CONNECTs in one session, forged forwarding headers).
 */

/** Headers in the order they go on the wire; a name may repeat. */
export type HeaderList = [string, string][];

/** node:http's header object for `list`: a repeated name becomes an array, so each value is a line of its own. */
export function headerObject(list: HeaderList): Record<string, string | string[]> {
  const out: Record<string, string[]> = {};
  const names = new Map<string, string>();
  for (const [name, value] of list) {
    const key = names.get(name.toLowerCase()) ?? name;
    names.set(name.toLowerCase(), key);
    (out[key] ??= []).push(value);
  }
  return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.length === 1 ? v[0]! : v]));
}

/**
 * The same for a `ws` client's `headers` option, typed as ws declares it
 * (strings): ws hands them to node:http, which sends an array as repeated lines.
 */
export const wsHeaders = (list: HeaderList): Record<string, string> => headerObject(list) as Record<string, string>;

/** An HTTP answer; `status` is undefined when none came (`error` says why). */
export interface Exchange {
  status: number | undefined;
  headers: http.IncomingHttpHeaders;
  body: string;
  error?: string;
}

/** One request on a connection of its own, from `localAddress` when given. Never rejects. */
export function exchange(
  url: string,
  opts: { method?: string; headers?: HeaderList; body?: string; localAddress?: string; timeoutMs?: number } = {},
): Promise<Exchange> {
  return new Promise((resolve) => {
    const timeoutMs = opts.timeoutMs ?? 5_000;
    const req = http.request(
      url,
      {
        method: opts.method ?? "GET",
        headers: { connection: "close", ...headerObject(opts.headers ?? []) },
        localAddress: opts.localAddress,
        agent: false,
        timeout: timeoutMs,
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body }));
        res.on("error", (err) => resolve({ status: res.statusCode, headers: res.headers, body, error: err.message }));
      },
    );
    req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", (err) => resolve({ status: undefined, headers: {}, body: "", error: err.message }));
    req.end(opts.body);
  });
}

/** What one wait on a session brought: server packets, and whether the session is over. */
export interface Received {
  packets: string[];
  /** The server ended the session (close packet, 400 for its sid, WebSocket close, connection end). */
  closed: boolean;
  /** Nothing came within the wait (the session is given up: see `EngineSession.receive`). */
  timedOut: boolean;
  /** What ended it, for messages. */
  how?: string;
}

export type EngineTransport = "polling" | "websocket";

/** An open Engine.IO session, from the handshake on. */
export interface EngineSession {
  readonly transport: EngineTransport;
  readonly sid: string;
  /** The largest packet the server reads (bytes; its open packet says so): a larger one ends the session. */
  readonly maxPayload: number;
  /** True once the server ended it (or we gave up on it). */
  readonly closed: boolean;
  /**
   * Sends Engine.IO packets ("40", "42[...]"): polling, one POST of them
   * joined by the record separator (answers its status, undefined if none
   * came); WebSocket, one text frame each, all in one write (answers 101).
   */
  send(packets: string[]): Promise<{ status: number | undefined; error?: string }>;
  /**
   * The server's next packets, waiting at most `timeoutMs` for them. A
   * polling wait that times out is aborted, which ends the session.
   */
  receive(timeoutMs: number): Promise<Received>;
  /** Ends it: the Engine.IO close packet ("1"; on WebSocket followed by a close frame), a WebSocket close frame, or dropping the connection. */
  end(how: "close-packet" | "close-frame" | "destroy"): Promise<void>;
}

const SEPARATOR = "\x1e";
const enginePath = (query: string) => `/socket.io/?EIO=4&${query}`;

/** The sid and maxPayload of an Engine.IO open packet (`0{"sid":...}`), or undefined. */
function openPacket(packet: string | undefined): { sid: string; maxPayload: number } | undefined {
  if (!packet?.startsWith("0")) return undefined;
  try {
    const { sid, maxPayload } = JSON.parse(packet.slice(1)) as { sid?: unknown; maxPayload?: unknown };
    return typeof sid === "string" ? { sid, maxPayload: typeof maxPayload === "number" ? maxPayload : Number.POSITIVE_INFINITY } : undefined;
  } catch {
    return undefined;
  }
}

/** A session that did not open: what the handshake got. */
export interface Refused {
  refused: string;
}

/**
 * A new Engine.IO session on the instance at `baseUrl` (http://host:port).
 * Polling goes from `localAddress` with `headers` on every request of it;
 * WebSocket goes from 127.0.0.1, with a valid handshake.
 */
export async function openSession(
  baseUrl: string,
  transport: EngineTransport,
  opts: { localAddress?: string; headers?: HeaderList; timeoutMs?: number } = {},
): Promise<EngineSession | Refused> {
  return transport === "polling" ? openPolling(baseUrl, opts) : openWebSocket(baseUrl, opts.timeoutMs ?? 5_000);
}

async function openPolling(baseUrl: string, opts: { localAddress?: string; headers?: HeaderList; timeoutMs?: number }): Promise<EngineSession | Refused> {
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const hs = await exchange(`${baseUrl}${enginePath("transport=polling")}`, { ...opts, timeoutMs });
  const open = hs.status === 200 ? openPacket(hs.body.split(SEPARATOR)[0]) : undefined;
  if (!open) return { refused: `polling handshake: ${hs.status ?? hs.error} ${hs.body.slice(0, 200)}` };
  const { sid, maxPayload } = open;
  const url = `${baseUrl}${enginePath(`transport=polling&sid=${encodeURIComponent(sid)}`)}`;
  let closed = false;
  const session: EngineSession = {
    transport: "polling",
    sid,
    maxPayload,
    get closed() {
      return closed;
    },
    async send(packets) {
      const res = await exchange(url, {
        method: "POST",
        headers: [...(opts.headers ?? []), ["Content-Type", "text/plain;charset=UTF-8"]],
        body: packets.join(SEPARATOR),
        localAddress: opts.localAddress,
        timeoutMs,
      });
      // 400: the session is gone; 413: too large, and Engine.IO ends the session.
      if (res.status !== 200) closed = true;
      return { status: res.status, error: res.error };
    },
    async receive(wait) {
      const res = await exchange(url, { headers: opts.headers, localAddress: opts.localAddress, timeoutMs: wait });
      if (res.status === undefined) {
        // Aborting a wait ends the session on the server too: either way it is over.
        closed = true;
        const timedOut = /no answer within/.test(res.error ?? "");
        return { packets: [], closed: !timedOut, timedOut, how: res.error };
      }
      if (res.status !== 200) {
        closed = true;
        return { packets: [], closed: true, timedOut: false, how: `GET answered ${res.status} ${res.body.slice(0, 200)}` };
      }
      const packets = res.body.split(SEPARATOR).filter((p) => p !== "");
      if (packets.includes("1")) closed = true;
      return { packets, closed, timedOut: false, how: closed ? "close packet" : undefined };
    },
    async end(how) {
      if (closed) return;
      closed = true;
      // A polling session has no connection of its own to drop: every way ends with the close packet.
      void how;
      await exchange(url, { method: "POST", headers: opts.headers, body: "1", localAddress: opts.localAddress, timeoutMs });
    },
  };
  return session;
}

async function openWebSocket(baseUrl: string, timeoutMs: number): Promise<EngineSession | Refused> {
  const { port, host } = new URL(baseUrl);
  const conn = await RawConnection.open(Number(port));
  conn.write(buildRequest({ target: enginePath("transport=websocket"), headers: upgradeHeaders(host) }));
  const res: RawResponse = await conn.response({ timeoutMs });
  if (res.status !== 101) {
    conn.destroy();
    return { refused: `WebSocket handshake: ${res.statusLine || res.error || "no answer"}` };
  }
  const first = await conn.frame(timeoutMs);
  const open = first?.opcode === 1 ? openPacket(first.payload.toString("utf8")) : undefined;
  if (!open) {
    conn.destroy();
    return { refused: `no Engine.IO open packet after the 101 (got ${JSON.stringify(first?.payload.toString("utf8").slice(0, 100))})` };
  }
  const { sid, maxPayload } = open;
  let closed = false;
  const session: EngineSession = {
    transport: "websocket",
    sid,
    maxPayload,
    get closed() {
      return closed;
    },
    async send(packets) {
      conn.write(Buffer.concat(packets.map((p) => encodeFrame({ opcode: 0x1, payload: p }))));
      return { status: 101 };
    },
    async receive(wait) {
      const deadline = Date.now() + wait;
      for (;;) {
        const f = await conn.frame(Math.max(0, deadline - Date.now()));
        if (!f) {
          if (conn.ended) {
            closed = true;
            return { packets: [], closed: true, timedOut: false, how: `connection ended${conn.error ? ` (${conn.error})` : ""}` };
          }
          return { packets: [], closed: false, timedOut: true };
        }
        if (f.opcode === 0x8) {
          closed = true;
          const code = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : undefined;
          return { packets: [], closed: true, timedOut: false, how: `close frame ${code ?? "(no code)"}` };
        }
        if (f.opcode === 0x1) return { packets: [f.payload.toString("utf8")], closed: false, timedOut: false };
      }
    },
    async end(how) {
      if (how === "destroy" || conn.ended) {
        closed = true;
        return conn.destroy();
      }
      // Engine.IO reads no close packet on WebSocket (its client closes the socket): after one, a
      // close frame all the same. Ours first, then the server's; or, when the server's came
      // already, ours to complete the closing handshake.
      if (!closed) {
        conn.write(Buffer.concat([...(how === "close-packet" ? [encodeFrame({ opcode: 0x1, payload: "1" })] : []), closeFrame(1000)]));
        await conn.readUntilClose(3_000);
      } else conn.write(closeFrame(1000));
      await conn.waitEnded(3_000);
      closed = true;
      conn.destroy();
    },
  };
  return session;
}

/** A decoded Socket.IO packet. */
export interface SioPacket {
  type: PacketType;
  nsp: string;
  data?: unknown;
  id?: number;
}

/** The Socket.IO packet an Engine.IO message packet ("4...") from the server carries, or undefined. */
export function sioPacket(enginePacket: string): SioPacket | undefined {
  if (!enginePacket.startsWith("4")) return undefined;
  let out: SioPacket | undefined;
  const decoder = new Decoder();
  decoder.on("decoded", (p: SioPacket) => (out = p));
  try {
    decoder.add(enginePacket.slice(1));
  } catch {
    return undefined;
  }
  return out;
}

/** The server's answer to a CONNECT to "/", if `enginePacket` is one. */
export type RootAnswer = { kind: "accepted"; sid: unknown } | { kind: "refused"; message: unknown; code: unknown };

export function rootAnswer(enginePacket: string): RootAnswer | undefined {
  const p = sioPacket(enginePacket);
  if (p?.nsp !== "/") return undefined;
  if (p.type === PacketType.CONNECT) return { kind: "accepted", sid: (p.data as { sid?: unknown } | undefined)?.sid };
  if (p.type === PacketType.CONNECT_ERROR) {
    const d = p.data as { message?: unknown; data?: { code?: unknown } } | undefined;
    return { kind: "refused", message: d?.message, code: d?.data?.code };
  }
  return undefined;
}

/**
 * What the server's Socket.IO decoder makes of the packets a session sends,
 * in order (one decoder a session, as the server has): the decoded packet,
 * "invalid" (the server ends the session then), or undefined (not a Socket.IO
 * packet, or an attachment still missing).
 */
export class SioMirror {
  readonly #decoder = new Decoder();
  #decoded: SioPacket | undefined;
  #broken = false;

  constructor() {
    this.#decoder.on("decoded", (p: SioPacket) => (this.#decoded = p));
  }

  feed(enginePacket: string): SioPacket | "invalid" | undefined {
    if (this.#broken) return "invalid";
    if (!enginePacket.startsWith("4")) return undefined;
    this.#decoded = undefined;
    try {
      this.#decoder.add(enginePacket.slice(1));
    } catch {
      this.#broken = true;
      return "invalid";
    }
    return this.#decoded;
  }
}

export { PacketType };
