import { type Socket, io } from "socket.io-client";
import WebSocket from "ws";
import type { ChatMessage, Welcome } from "../../server/protocol.js";
import { Inbox } from "./inbox.js";

/**
 * Clients that recover the way the protocol tells real clients to: keep the
 * epoch of the last welcome and the offset of the last broadcast (or of the
 * welcome, until one arrives), and send both back when reconnecting. Plus a
 * publisher of numbered messages and the check that a receiver got every
 * number exactly once, in order.
 */

/** Orders two offsets (`<ms>-<seq>`) without trusting the server's own comparison. */
export function compareOffsets(a: string, b: string): number {
  const [am, as] = a.split("-").map(BigInt) as [bigint, bigint];
  const [bm, bs] = b.split("-").map(BigInt) as [bigint, bigint];
  return am !== bm ? (am < bm ? -1 : 1) : as === bs ? 0 : as < bs ? -1 : 1;
}

export const OFFSET = /^\d+-\d+$/;

/** One thing a client received, in arrival order: Socket.IO event (or /ws frame type) and payload. */
export interface Received {
  event: string;
  data: any;
}

/** What every recovering client has: where it stands, and what it received. */
abstract class Tracker {
  epoch: string | undefined;
  offset: string | undefined;
  readonly welcomes: Welcome[] = [];
  readonly inbox = new Inbox<Received>();

  protected record(event: string, data: any): void {
    if (event === "welcome") {
      const w = data as Welcome;
      this.welcomes.push(w);
      this.epoch = w.epoch;
      this.offset = w.offset;
    } else if (typeof data?.offset === "string") {
      this.offset = data.offset;
    }
    this.inbox.push({ event, data });
  }

  /** The next welcome (one not handed out yet). */
  welcome(timeoutMs = 5_000): Promise<Welcome> {
    return this.inbox.next((r) => r.event === "welcome", timeoutMs, "a welcome").then((r) => r.data as Welcome);
  }

  /** The next chat message whose text matches. */
  message(text: string | RegExp, timeoutMs = 5_000): Promise<ChatMessage> {
    const match = (t: string) => (typeof text === "string" ? t === text : text.test(t));
    return this.inbox.next((r) => r.event === "message" && match(r.data.text), timeoutMs, `message ${String(text)}`).then((r) => r.data as ChatMessage);
  }

  /** Texts of every chat message received, in order. */
  texts(): string[] {
    return this.inbox.items.filter((r) => r.event === "message").map((r) => r.data.text as string);
  }

  /** What arrived from the `n`-th welcome (0-based) on, in order. */
  since(welcomeIndex: number): Received[] {
    let seen = -1;
    const start = this.inbox.items.findIndex((r) => r.event === "welcome" && ++seen === welcomeIndex);
    return start < 0 ? [] : this.inbox.items.slice(start);
  }

  /** Each welcome with the last number received before it, for failure messages: `[after n:27] ws2 recovered=true replayed=25 offset=...`. */
  timeline(prefix = "n:"): string {
    let last = "start";
    const out: string[] = [];
    for (const r of this.inbox.items) {
      if (r.event === "message" && typeof r.data.text === "string" && r.data.text.startsWith(prefix)) last = r.data.text;
      if (r.event === "welcome")
        out.push(`[after ${last}] ${r.data.instance} recovered=${r.data.recovered} replayed=${r.data.replayed} offset=${r.data.offset}`);
    }
    return out.join("\n  ");
  }

  /** The numbers of the numbered messages (`<prefix><n>`) received, in order. */
  numbers(prefix = "n:"): number[] {
    return this.texts()
      .filter((t) => t.startsWith(prefix))
      .map((t) => Number(t.slice(prefix.length)));
  }
}

/**
 * A socket.io-client whose `auth` is a function, called on every
 * (re)connect: `{ epoch, offset, rooms }` once it has a welcome. `moveTo`
 * makes its next connection go to another instance, as nginx would after the
 * instance it was on drained or crashed.
 */
export class ResumingIo extends Tracker {
  readonly socket: Socket;
  readonly disconnects: string[] = [];

  constructor(url: string, opts: { rooms?: string[]; reconnection?: boolean; clientId?: string } = {}) {
    super();
    this.socket = io(url, {
      transports: ["websocket"],
      forceNew: true,
      reconnection: opts.reconnection ?? false,
      reconnectionDelay: 50,
      reconnectionDelayMax: 200,
      randomizationFactor: 0,
      timeout: 5_000,
      autoConnect: false,
      auth: (cb) =>
        cb({
          ...(opts.clientId ? { clientId: opts.clientId } : {}),
          ...(opts.rooms ? { rooms: opts.rooms } : {}),
          ...(this.epoch !== undefined && this.offset !== undefined ? { epoch: this.epoch, offset: this.offset } : {}),
        }),
    });
    this.socket.onAny((event: string, data: unknown) => this.record(event, data));
    this.socket.on("disconnect", (reason) => this.disconnects.push(reason));
  }

  /** Connects (or reconnects) and resolves with the welcome of that connection. */
  async connect(timeoutMs = 5_000): Promise<Welcome> {
    const welcome = this.welcome(timeoutMs);
    const refused = new Promise<never>((_, reject) => this.socket.once("connect_error", (err) => reject(err)));
    this.socket.connect();
    return Promise.race([welcome, refused]);
  }

  /** Where the next connection (a reconnect by socket.io-client itself included) goes. */
  moveTo(url: string): void {
    (this.socket.io as unknown as { uri: string }).uri = url;
  }

  /** Resolves with the reason of the next disconnect. */
  nextDisconnect(): Promise<string> {
    return new Promise((resolve) => this.socket.once("disconnect", resolve));
  }

  close(): void {
    this.socket.close();
  }
}

/**
 * A /ws client in JSON mode that reconnects with `?since=<offset>&epoch=<epoch>`.
 * Each `connect` opens a new WebSocket (to the base URL given).
 */
export class ResumingWs extends Tracker {
  ws: WebSocket | undefined;
  /** The close of the current connection. */
  closed: Promise<{ code: number; reason: string }> = Promise.resolve({ code: 0, reason: "never opened" });

  /** `base` is the instance's ws:// URL (no path); resolves with the welcome. */
  async connect(base: string): Promise<Welcome> {
    const query = new URLSearchParams({ format: "json" });
    if (this.epoch !== undefined && this.offset !== undefined) {
      query.set("since", this.offset);
      query.set("epoch", this.epoch);
    }
    const ws = new WebSocket(`${base}/ws?${query}`);
    this.ws = ws;
    ws.on("message", (data) => {
      const frame = JSON.parse(data.toString()) as { type: string; data: unknown };
      this.record(frame.type, frame.data);
    });
    this.closed = new Promise((resolve) => ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() })));
    const welcome = this.welcome();
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
      ws.once("unexpected-response", (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    });
    return welcome;
  }

  close(): void {
    this.ws?.close();
  }
}

/**
 * Sends `n:1`, `n:2`, ... from one Socket.IO client, each after the previous
 * one's ack (so as fast as acks allow, in order), until stopped.
 */
export class NumberedPublisher {
  sent = 0;
  #stopping = false;
  #loop: Promise<void> | undefined;
  readonly #waiters = new Set<{ n: number; resolve: () => void }>();

  constructor(
    private readonly socket: Socket,
    private readonly prefix = "n:",
  ) {}

  start(): void {
    this.#loop = (async () => {
      while (!this.#stopping) {
        const n = this.sent + 1;
        const ack = (await this.socket.timeout(5_000).emitWithAck("message", `${this.prefix}${n}`)) as { ok: boolean; error?: string };
        if (!ack.ok) throw new Error(`publishing ${this.prefix}${n} refused: ${JSON.stringify(ack)}`);
        this.sent = n;
        for (const w of this.#waiters) {
          if (n >= w.n) {
            this.#waiters.delete(w);
            w.resolve();
          }
        }
      }
    })();
    // A failure surfaces in stop(); until then waits time out with what was sent.
    this.#loop.catch(() => undefined);
  }

  /** Resolves once `count` more messages than now have been acknowledged. */
  more(count: number, timeoutMs = 10_000): Promise<void> {
    return this.reach(this.sent + count, timeoutMs);
  }

  /** Resolves once message `n` has been acknowledged. */
  reach(n: number, timeoutMs = 10_000): Promise<void> {
    if (this.sent >= n) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = {
        n,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(new Error(`publisher reached ${this.prefix}${this.sent}, not ${this.prefix}${n}, within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiters.add(waiter);
    });
  }

  /** Stops after the message in flight; resolves with the last number sent (rejects if publishing failed). */
  async stop(): Promise<number> {
    this.#stopping = true;
    await this.#loop;
    return this.sent;
  }
}

/**
 * Fails unless `got` is exactly 1..last, in order, with a message that says
 * what is wrong (missing, repeated, out of order) instead of two long arrays.
 */
export function expectEveryNumberOnce(client: { numbers(): number[]; timeline(): string }, last: number, who: string): void {
  const got = client.numbers();
  const problems: string[] = [];
  const seen = new Map<number, number>();
  for (const n of got) seen.set(n, (seen.get(n) ?? 0) + 1);
  const missing: number[] = [];
  for (let n = 1; n <= last; n++) if (!seen.has(n)) missing.push(n);
  const repeated = [...seen].filter(([, k]) => k > 1).map(([n, k]) => `${n}×${k}`);
  const extra = [...seen.keys()].filter((n) => n < 1 || n > last);
  const disorder: string[] = [];
  for (let i = 1; i < got.length; i++) if (got[i]! <= got[i - 1]!) disorder.push(`${got[i - 1]} then ${got[i]}`);
  if (missing.length > 0) problems.push(`${missing.length} missing (first: ${missing.slice(0, 10).join(", ")})`);
  if (repeated.length > 0) problems.push(`${repeated.length} repeated (${repeated.slice(0, 10).join(", ")})`);
  if (extra.length > 0) problems.push(`unexpected ${extra.slice(0, 10).join(", ")}`);
  if (disorder.length > 0) problems.push(`out of order: ${disorder.slice(0, 10).join("; ")}`);
  if (problems.length > 0) throw new Error(`${who}: of 1..${last}, received ${got.length}: ${problems.join("; ")}\n  welcomes:\n  ${client.timeline()}`);
}

/** POST /broadcast-to-all; resolves with the JSON answer. */
export async function httpBroadcast(url: string, message: string, room?: string): Promise<{ sent: number; partial: boolean }> {
  const res = await fetch(`${url}/broadcast-to-all`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(room === undefined ? { message } : { message, room }),
  });
  if (res.status !== 200) throw new Error(`POST /broadcast-to-all answered ${res.status}: ${await res.text()}`);
  return (await res.json()) as { sent: number; partial: boolean };
}
