import WebSocket from "ws";
import type { Place } from "../harness/rolling-restart.js";

/**
 * A cheap Socket.IO client for load generation: Engine.IO v4 and Socket.IO v5
 * framing spoken directly over one `ws` WebSocket, with no polling, no
 * reconnection, no buffering, no binary attachments and only the `/`
 * namespace. What it does:
 *
 * - opens `ws://host/socket.io/?EIO=4&transport=websocket`;
 * - reads the Engine.IO open packet `0{"sid":...,"pingInterval":...}`;
 * - sends `40` (with the auth JSON when given) to join namespace `/`, and
 *   resolves `ready` on `40{"sid":...}` or rejects on `44{"message":...}`;
 * - with a `place`, keeps where it is in the service's history (the
 *   welcome's epoch and offset, then each broadcast's `"offset":"…"`, found
 *   in the bytes) and sends them in that auth: a new client given the same
 *   place resumes where the last one stopped, as socket.io-client does with
 *   an `auth` function;
 * - answers every server ping `2` with a pong `3`;
 * - emits `42["event",...args]`, with an ack id (`42<id>[...]`) when asked,
 *   and resolves acks from `43<id>[...]`;
 * - hands each event to `onRaw`, the bytes untouched: the load generator
 *   scans them without parsing JSON.
 */
export interface EngineClientOptions {
  /** Sent with the namespace CONNECT packet (`socket.handshake.auth`); a function is called when it is sent. */
  auth?: Record<string, unknown> | (() => Record<string, unknown>);
  /** Recovery: its offset and epoch go into the auth, and the welcome and every broadcast move it on. */
  place?: Place;
  /** With `place`: the welcome, and whether it answered a resume (then `recovered` says how it went). */
  onWelcome?: (welcome: WelcomeInfo, resumed: boolean, client: EngineClient) => void;
  /** Source address (127.0.0.x) for when one address runs out of ports. */
  localAddress?: string;
  /** Until the namespace answers. @default 10_000 */
  timeoutMs?: number;
  /** Event packets (`42...`) as they came; without it, events are dropped. */
  onRaw?: (data: Buffer, client: EngineClient) => void;
  /** The WebSocket closed (after `ready`, or while connecting). */
  onClose?: (code: number, client: EngineClient) => void;
}

/** What the bench reads of a welcome. */
export interface WelcomeInfo {
  instance?: string;
  epoch?: string;
  offset?: string;
  recovered?: boolean;
  replayed?: number;
}

const WELCOME = Buffer.from('42["welcome",');
const OFFSET_KEY = Buffer.from('"offset":"');
const QUOTE = 0x22;

// Engine.IO packet types (first byte) and Socket.IO packet types (second).
const EIO_OPEN = 0x30; // '0'
const EIO_CLOSE = 0x31; // '1'
const EIO_PING = 0x32; // '2'
const EIO_MESSAGE = 0x34; // '4'
const SIO_CONNECT = 0x30; // '0'
const SIO_DISCONNECT = 0x31; // '1'
const SIO_EVENT = 0x32; // '2'
const SIO_ACK = 0x33; // '3'
const SIO_CONNECT_ERROR = 0x34; // '4'

export class EngineClient {
  readonly ws: WebSocket;
  /** Engine.IO session id (ours start with the owning instance: "ws2.…"). */
  sid: string | undefined;
  /** Resolves once namespace `/` accepted us; rejects with the connect_error's message or why the socket went. */
  readonly ready: Promise<void>;

  readonly #opts: EngineClientOptions;
  #acks: Map<number, (args: unknown[]) => void> | undefined;
  #nextAck = 0;
  #settle: ((err?: Error) => void) | undefined;

  constructor(baseUrl: string, opts: EngineClientOptions = {}) {
    this.#opts = opts;
    const url = new URL("/socket.io/", baseUrl.replace(/^http/, "ws"));
    url.searchParams.set("EIO", "4");
    url.searchParams.set("transport", "websocket");
    this.ws = new WebSocket(url, {
      perMessageDeflate: false,
      skipUTF8Validation: true,
      handshakeTimeout: opts.timeoutMs ?? 10_000,
      ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
    });
    this.ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        const where = this.sid
          ? `Engine.IO session open on ${this.sid.split(".")[0]}`
          : this.ws.readyState === WebSocket.OPEN
            ? "no Engine.IO open packet"
            : "WebSocket not open";
        this.#fail(new Error(`timeout waiting for the namespace to connect (${where})`));
      }, opts.timeoutMs ?? 10_000);
      this.#settle = (err) => {
        clearTimeout(timer);
        this.#settle = undefined;
        if (err) reject(err);
        else resolve();
      };
    });
    this.ws.on("message", (data: Buffer) => this.#onFrame(data));
    this.ws.on("error", (err) => this.#fail(err));
    this.ws.on("unexpected-response", (_req, res) => {
      this.#fail(new Error(`HTTP ${res.statusCode} on the WebSocket upgrade`));
      res.resume();
    });
    this.ws.on("close", (code) => {
      this.#fail(new Error(`closed with ${code} before the namespace connected`));
      this.#opts.onClose?.(code, this);
    });
  }

  /** `42["event",...args]`. */
  emit(event: string, ...args: unknown[]): void {
    this.sendRaw(`42${JSON.stringify([event, ...args])}`);
  }

  /** `42<id>["event",...args]`; resolves with the ack's arguments. */
  emitWithAck(event: string, ...args: unknown[]): Promise<unknown[]> {
    const id = this.#nextAck++;
    return new Promise((resolve) => {
      (this.#acks ??= new Map()).set(id, resolve);
      this.sendRaw(`42${id}${JSON.stringify([event, ...args])}`);
    });
  }

  /** Sends an already encoded Engine.IO packet ("42…", "3", …). */
  sendRaw(packet: string): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(packet);
  }

  /** Leaves the namespace and closes the WebSocket. */
  close(): void {
    if (this.ws.readyState === WebSocket.OPEN) {
      this.ws.send("41");
      this.ws.close();
    } else if (this.ws.readyState === WebSocket.CONNECTING) {
      this.ws.terminate();
    }
  }

  /** Drops the TCP connection at once (no close handshake). */
  terminate(): void {
    this.ws.terminate();
  }

  #fail(err: Error): void {
    if (!this.#settle) return;
    this.#settle(err);
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
  }

  #onFrame(data: Buffer): void {
    const type = data[0];
    if (type === EIO_MESSAGE) {
      const sio = data[1];
      if (sio === SIO_EVENT) {
        if (this.#opts.place) this.#keepPlace(data, this.#opts.place);
        return this.#opts.onRaw?.(data, this);
      }
      if (sio === SIO_ACK) return this.#onAck(data);
      if (sio === SIO_CONNECT) return this.#settle?.();
      if (sio === SIO_CONNECT_ERROR) {
        const body = JSON.parse(data.toString("utf8", 2)) as { message?: string };
        return this.#fail(new Error(body.message ?? "connect_error"));
      }
      if (sio === SIO_DISCONNECT) this.ws.close();
      return;
    }
    if (type === EIO_PING) {
      this.sendRaw("3");
      return;
    }
    if (type === EIO_OPEN) {
      this.sid = (JSON.parse(data.toString("utf8", 1)) as { sid: string }).sid;
      const given = typeof this.#opts.auth === "function" ? this.#opts.auth() : this.#opts.auth;
      const auth = this.#opts.place ? { ...given, ...this.#opts.place.resume() } : given;
      this.sendRaw(auth ? `40${JSON.stringify(auth)}` : "40");
      return;
    }
    if (type === EIO_CLOSE) this.ws.close();
  }

  /** The welcome (parsed: one a connection) or a broadcast's offset (scanned: a JSON string holds no bare `"`). */
  #keepPlace(data: Buffer, place: Place): void {
    if (data.subarray(0, WELCOME.length).equals(WELCOME)) {
      const [, welcome] = JSON.parse(data.toString("utf8", 2)) as [string, WelcomeInfo];
      const resumed = place.welcome(welcome);
      this.#opts.onWelcome?.(welcome, resumed, this);
      return;
    }
    const at = data.lastIndexOf(OFFSET_KEY);
    if (at < 0) return;
    const from = at + OFFSET_KEY.length;
    const to = data.indexOf(QUOTE, from);
    if (to > from) place.seen(data.toString("latin1", from, to));
  }

  #onAck(data: Buffer): void {
    const text = data.toString("utf8", 2);
    const start = text.indexOf("[");
    const id = Number(text.slice(0, start));
    const resolve = this.#acks?.get(id);
    if (!resolve) return;
    this.#acks!.delete(id);
    resolve(JSON.parse(text.slice(start)) as unknown[]);
  }
}
