import { randomBytes } from "node:crypto";
import net from "node:net";

/**
 * Raw HTTP/1.1 and WebSocket bytes over a plain TCP socket, for requests that
 * no well-behaved client library would send (malformed targets, missing or
 * bad handshake headers, invalid UTF-8 in a text frame): what the test builds
 * is exactly what goes on the wire.
 */

/** The first response on a connection, as read off the wire. */
export interface RawResponse {
  /** undefined when no status line came (closed silently or timed out). */
  status: number | undefined;
  statusLine: string;
  /** Lower-cased names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  body: Buffer;
  /** Everything received for this response (head and body). */
  raw: Buffer;
  /** The peer closed (or reset) the connection before or while it answered. */
  closed: boolean;
  /** The socket error, if any (ECONNRESET, EPIPE). */
  error: string | undefined;
  /** Nothing complete arrived within the time limit. */
  timedOut: boolean;
}

/** A server frame, as read off the wire after a 101. */
export interface RawFrame {
  fin: boolean;
  opcode: number;
  payload: Buffer;
}

export interface RequestSpec {
  method?: string;
  target: string;
  /** @default "HTTP/1.1" */
  version?: string;
  /** In this order, exactly as given (duplicates allowed). */
  headers?: [string, string][];
  body?: Buffer | string;
}

/** A valid Sec-WebSocket-Key: base64 of 16 random bytes. */
export const wsKey = (): string => randomBytes(16).toString("base64");

/** The request line, headers and body, byte for byte as given (UTF-8; nothing is encoded or checked). */
export function buildRequest(spec: RequestSpec): Buffer {
  const head = [`${spec.method ?? "GET"} ${spec.target} ${spec.version ?? "HTTP/1.1"}`, ...(spec.headers ?? []).map(([k, v]) => `${k}: ${v}`)].join("\r\n");
  const body = spec.body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(spec.body) ? spec.body : Buffer.from(spec.body, "utf8");
  return Buffer.concat([Buffer.from(`${head}\r\n\r\n`, "utf8"), body]);
}

/** The headers of a valid WebSocket handshake (RFC 6455), to be varied by the caller. */
export function upgradeHeaders(host: string, extra: [string, string][] = []): [string, string][] {
  return [["Host", host], ["Connection", "Upgrade"], ["Upgrade", "websocket"], ["Sec-WebSocket-Version", "13"], ["Sec-WebSocket-Key", wsKey()], ...extra];
}

/**
 * One client WebSocket frame. Masked by default, as a client must; `mask:
 * false`, reserved bits and reserved opcodes can be set to send protocol errors.
 */
export function encodeFrame(f: { opcode: number; payload?: Buffer | string; fin?: boolean; mask?: boolean; rsv?: number }): Buffer {
  const payload = f.payload === undefined ? Buffer.alloc(0) : Buffer.isBuffer(f.payload) ? f.payload : Buffer.from(f.payload, "utf8");
  const mask = f.mask ?? true;
  const len = payload.length;
  const lenBytes = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const head = Buffer.alloc(2 + lenBytes + (mask ? 4 : 0));
  head[0] = ((f.fin ?? true) ? 0x80 : 0) | (((f.rsv ?? 0) & 0x7) << 4) | (f.opcode & 0x0f);
  head[1] = (mask ? 0x80 : 0) | (len < 126 ? len : len < 65536 ? 126 : 127);
  if (lenBytes === 2) head.writeUInt16BE(len, 2);
  if (lenBytes === 8) head.writeBigUInt64BE(BigInt(len), 2);
  if (!mask) return Buffer.concat([head, payload]);
  const key = randomBytes(4);
  key.copy(head, 2 + lenBytes);
  const masked = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) masked[i] = payload[i]! ^ key[i & 3]!;
  return Buffer.concat([head, masked]);
}

/** A close frame with `code` (and optional reason). */
export const closeFrame = (code: number, reason = ""): Buffer => {
  const payload = Buffer.alloc(2 + Buffer.byteLength(reason));
  payload.writeUInt16BE(code, 0);
  payload.write(reason, 2);
  return encodeFrame({ opcode: 0x8, payload });
};

/**
 * One TCP connection to a server. Read its first response with `response()`;
 * after a 101, read WebSocket frames with `frame()`. `closed` resolves when
 * the socket is gone (either side). Never throws on socket errors: they are
 * recorded, since a reset is an answer too.
 */
export class RawConnection {
  readonly socket: net.Socket;
  /** Resolves once the socket has closed. */
  readonly closed: Promise<void>;
  #buf: Buffer = Buffer.alloc(0);
  #ended = false;
  #error: string | undefined;
  #wake: (() => void) | undefined;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
      this.#notify();
    });
    socket.on("error", (err: NodeJS.ErrnoException) => {
      this.#error ??= err.code ?? err.message;
      this.#notify();
    });
    this.closed = new Promise((resolve) =>
      socket.once("close", () => {
        this.#ended = true;
        this.#notify();
        resolve();
      }),
    );
    socket.on("end", () => {
      this.#ended = true;
      this.#notify();
    });
  }

  /** Connects (rejects if the port refuses). */
  static open(port: number, host = "127.0.0.1", timeoutMs = 3_000): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host, allowHalfOpen: true });
      socket.setNoDelay(true);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`no TCP connection to ${host}:${port} within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once("connect", () => {
        clearTimeout(timer);
        resolve(new RawConnection(socket));
      });
      socket.once("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  get error(): string | undefined {
    return this.#error;
  }

  /** True once the peer ended or the socket closed. */
  get ended(): boolean {
    return this.#ended;
  }

  /** Writes bytes, if the socket is still writable (a refused request may be closed under us). */
  write(data: Buffer | string): void {
    if (!this.socket.destroyed && this.socket.writable) this.socket.write(data);
  }

  /** Writes `data` in pieces cut at the given offsets (a receiver must reassemble them). */
  writeSplit(data: Buffer, cuts: number[]): void {
    let at = 0;
    for (const cut of [...new Set(cuts.filter((c) => c > 0 && c < data.length))].sort((a, b) => a - b)) {
      this.write(data.subarray(at, cut));
      at = cut;
    }
    this.write(data.subarray(at));
  }

  /** Half-closes our side (FIN), keeping the socket readable. */
  end(): void {
    if (!this.socket.destroyed) this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  /**
   * The next response: status line and headers, then the body by
   * Content-Length, chunked encoding, or until close. For 101 the body is empty
   * and what follows stays for `frame()`. Interim 1xx answers (100 Continue)
   * are skipped. Resolves (never rejects) within `timeoutMs`.
   */
  async response(opts: { timeoutMs?: number; method?: string } = {}): Promise<RawResponse> {
    const deadline = Date.now() + (opts.timeoutMs ?? 5_000);
    const interim: Buffer[] = [];
    for (;;) {
      const headEnd = await this.#waitFor(() => {
        const i = this.#buf.indexOf("\r\n\r\n");
        return i >= 0 ? i : undefined;
      }, deadline);
      if (headEnd === undefined) return this.#incomplete(deadline);
      const head = this.#buf.subarray(0, headEnd).toString("latin1");
      const [statusLine = "", ...lines] = head.split("\r\n");
      const m = /^HTTP\/\d(?:\.\d)? (\d{3})(?: |$)/.exec(statusLine);
      if (!m) return { ...this.#incomplete(deadline), statusLine };
      const status = Number(m[1]);
      const headers: Record<string, string> = {};
      for (const line of lines) {
        const colon = line.indexOf(":");
        if (colon <= 0) continue;
        const name = line.slice(0, colon).trim().toLowerCase();
        const value = line.slice(colon + 1).trim();
        headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
      }
      const afterHead = headEnd + 4;
      if (status >= 100 && status < 200 && status !== 101) {
        interim.push(this.#take(afterHead));
        continue;
      }
      let bodyLen: number | undefined;
      let body: Buffer = Buffer.alloc(0);
      const noBody = status === 101 || status === 204 || status === 304 || opts.method?.toUpperCase() === "HEAD";
      // The body did not arrive whole before the deadline or the close: what there is.
      const incomplete = () => ({
        status,
        statusLine,
        headers,
        body: this.#buf.subarray(afterHead),
        raw: this.#take(this.#buf.length),
        closed: this.#ended,
        error: this.#error,
        timedOut: !this.#ended,
      });
      if (!noBody) {
        if (/chunked/i.test(headers["transfer-encoding"] ?? "")) {
          const parsed = await this.#waitFor(() => parseChunked(this.#buf, afterHead), deadline);
          if (parsed === undefined) return incomplete();
          body = parsed.body;
          bodyLen = parsed.end - afterHead;
        } else if (headers["content-length"] !== undefined) {
          const want = Number(headers["content-length"]);
          const got = await this.#waitFor(() => (this.#buf.length >= afterHead + want ? true : undefined), deadline);
          if (got === undefined) return incomplete();
          body = this.#buf.subarray(afterHead, afterHead + want);
          bodyLen = want;
        } else {
          // Delimited by the close.
          await this.#waitFor(() => (this.#ended ? true : undefined), deadline);
          body = this.#buf.subarray(afterHead);
          bodyLen = body.length;
          if (!this.#ended) return { status, statusLine, headers, body, raw: this.#take(this.#buf.length), closed: false, error: this.#error, timedOut: true };
        }
      }
      const raw = Buffer.concat([...interim, this.#take(afterHead + (bodyLen ?? 0))]);
      return { status, statusLine, headers, body: Buffer.from(body), raw, closed: this.#ended, error: this.#error, timedOut: false };
    }
  }

  /** The next server frame after a 101; undefined when the connection ends or the time is up first. */
  async frame(timeoutMs = 5_000): Promise<RawFrame | undefined> {
    const deadline = Date.now() + timeoutMs;
    const parsed = await this.#waitFor(() => parseFrame(this.#buf), deadline);
    if (!parsed) return undefined;
    this.#take(parsed.length);
    return parsed.frame;
  }

  /**
   * Frames until the server's close frame or the end of the connection
   * (bounded). `close` is the server's close frame, if one came: its code, or
   * undefined when it carried none.
   */
  async readUntilClose(timeoutMs = 5_000): Promise<{ frames: RawFrame[]; close: { code: number | undefined } | undefined }> {
    const deadline = Date.now() + timeoutMs;
    const frames: RawFrame[] = [];
    for (;;) {
      const f = await this.frame(Math.max(0, deadline - Date.now()));
      if (!f) return { frames, close: undefined };
      frames.push(f);
      if (f.opcode === 0x8) return { frames, close: { code: f.payload.length >= 2 ? f.payload.readUInt16BE(0) : undefined } };
    }
  }

  /** Resolves true once the peer has ended (FIN) or the socket closed, false if `timeoutMs` passes first. */
  async waitEnded(timeoutMs: number): Promise<boolean> {
    return (await this.#waitFor(() => (this.#ended || this.socket.destroyed ? true : undefined), Date.now() + timeoutMs)) === true;
  }

  #take(n: number): Buffer {
    const out = this.#buf.subarray(0, n);
    this.#buf = this.#buf.subarray(n);
    return Buffer.from(out);
  }

  #incomplete(deadline: number): RawResponse {
    const raw = this.#take(this.#buf.length);
    return {
      status: undefined,
      statusLine: raw.toString("latin1").split("\r\n")[0] ?? "",
      headers: {},
      body: Buffer.alloc(0),
      raw,
      closed: this.#ended,
      error: this.#error,
      timedOut: !this.#ended && Date.now() >= deadline,
    };
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  /** Re-evaluates `probe` on every arrival until it answers, the socket ends, or the deadline passes. */
  async #waitFor<T>(probe: () => T | undefined, deadline: number): Promise<T | undefined> {
    for (;;) {
      const v = probe();
      if (v !== undefined) return v;
      if (this.#ended || this.socket.destroyed) return probe();
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.#wake = undefined;
          resolve();
        }, left);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }
}

function parseChunked(buf: Buffer, from: number): { body: Buffer; end: number } | undefined {
  const parts: Buffer[] = [];
  let at = from;
  for (;;) {
    const lineEnd = buf.indexOf("\r\n", at);
    if (lineEnd < 0) return undefined;
    const size = parseInt(buf.subarray(at, lineEnd).toString("latin1").split(";")[0]!.trim(), 16);
    if (!Number.isFinite(size)) return { body: Buffer.concat(parts), end: buf.length }; // not chunked after all: take what there is
    const dataStart = lineEnd + 2;
    if (size === 0) {
      // Trailers (none expected) end with an empty line.
      const trailerEnd = buf.indexOf("\r\n", dataStart);
      if (trailerEnd < 0) return undefined;
      return { body: Buffer.concat(parts), end: trailerEnd + 2 };
    }
    if (buf.length < dataStart + size + 2) return undefined;
    parts.push(buf.subarray(dataStart, dataStart + size));
    at = dataStart + size + 2;
  }
}

function parseFrame(buf: Buffer): { frame: RawFrame; length: number } | undefined {
  if (buf.length < 2) return undefined;
  const b0 = buf[0]!;
  const b1 = buf[1]!;
  let len = b1 & 0x7f;
  let at = 2;
  if (len === 126) {
    if (buf.length < 4) return undefined;
    len = buf.readUInt16BE(2);
    at = 4;
  } else if (len === 127) {
    if (buf.length < 10) return undefined;
    len = Number(buf.readBigUInt64BE(2));
    at = 10;
  }
  const masked = (b1 & 0x80) !== 0;
  const key = masked ? buf.subarray(at, at + 4) : undefined;
  if (masked) at += 4;
  if (buf.length < at + len) return undefined;
  let payload = Buffer.from(buf.subarray(at, at + len));
  if (key) payload = Buffer.from(payload.map((b, i) => b ^ key[i & 3]!));
  return { frame: { fin: (b0 & 0x80) !== 0, opcode: b0 & 0x0f, payload }, length: at + len };
}

/**
 * Sends one request on a fresh connection and reads its answer, then closes
 * the connection (also after a 101). For one-shot checks.
 */
export async function rawExchange(
  port: number,
  request: Buffer | string | RequestSpec,
  opts: { timeoutMs?: number; host?: string } = {},
): Promise<RawResponse> {
  const conn = await RawConnection.open(port, opts.host);
  try {
    const bytes = typeof request === "string" || Buffer.isBuffer(request) ? request : buildRequest(request);
    conn.write(bytes);
    const method = typeof request === "object" && !Buffer.isBuffer(request) ? request.method : undefined;
    return await conn.response({ timeoutMs: opts.timeoutMs, method });
  } finally {
    conn.destroy();
  }
}

/** Parses a JSON body, or answers undefined. */
export function jsonBody(res: RawResponse): any {
  try {
    return JSON.parse(res.body.toString("utf8"));
  } catch {
    return undefined;
  }
}
