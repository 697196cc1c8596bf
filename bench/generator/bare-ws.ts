import { randomBytes } from "node:crypto";
import net from "node:net";

/**
 * A WebSocket client on a bare TCP socket, for the abuse scenario's
 * attackers: it writes one prebuilt frame as often as asked and reads only
 * as much as it wants (the replay attacker stops after the welcome, the
 * address flood discards everything unparsed), where a client library would
 * parse every frame that comes.
 */

export interface BareUpgrade {
  /** The HTTP status of the answer; undefined when none came. */
  status: number | undefined;
  /** On a 101: the socket, open and paused (nothing more is read until the caller resumes it). */
  socket: net.Socket | undefined;
  /** What came after the answer's head: the first server frames. */
  rest: Buffer;
  /** Why no answer came (the connect failed, timed out or was closed). */
  error: string | undefined;
}

const HEAD_END = Buffer.from("\r\n\r\n");
/** An answer head larger than this is not one we wait for. */
const MAX_HEAD_BYTES = 16 * 1024;

/**
 * Connects to `url` (http:// or ws://, path and query as given), from
 * `localAddress` when set, and asks for a WebSocket upgrade; resolves with the
 * answer's status once its head has come. Any socket but an upgraded one is
 * destroyed.
 */
export function bareUpgrade(url: string, opts: { localAddress?: string; timeoutMs: number }): Promise<BareUpgrade> {
  const u = new URL(url);
  const port = Number(u.port) || 80;
  return new Promise((resolve) => {
    const socket = net.connect({ host: u.hostname, port, ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) });
    let head = Buffer.alloc(0);
    let settled = false;
    const settle = (r: BareUpgrade) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.removeListener("data", onData);
      if (r.socket) socket.pause();
      else socket.destroy();
      resolve(r);
    };
    const fail = (error: string) => settle({ status: undefined, socket: undefined, rest: Buffer.alloc(0), error });
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf(HEAD_END);
      if (end < 0) return head.length > MAX_HEAD_BYTES ? fail("answer head too large") : undefined;
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head.subarray(0, end).toString("latin1"))?.[1]) || undefined;
      settle({ status, socket: status === 101 ? socket : undefined, rest: head.subarray(end + HEAD_END.length), error: undefined });
    };
    const timer = setTimeout(() => fail("timeout"), opts.timeoutMs);
    // Errors after the upgrade (a reset while paused) must not end the process.
    socket.on("error", (err: NodeJS.ErrnoException) => fail(err.code ?? err.message));
    socket.once("close", () => fail("closed"));
    socket.on("data", onData);
    socket.once("connect", () => {
      socket.write(
        `GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
          `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\n\r\n`,
      );
    });
  });
}

/**
 * A client text frame (RFC 6455 §5.2), masked with an all-zero key: the
 * payload goes as it is, so one Buffer serves every send.
 */
export function maskedTextFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  const n = payload.length;
  const lengthBytes = n < 126 ? 0 : n <= 0xffff ? 2 : 8;
  const frame = Buffer.alloc(2 + lengthBytes + 4 + n);
  frame[0] = 0x81; // FIN, text
  frame[1] = 0x80 | (lengthBytes === 0 ? n : lengthBytes === 2 ? 126 : 127);
  if (lengthBytes === 2) frame.writeUInt16BE(n, 2);
  else if (lengthBytes === 8) frame.writeBigUInt64BE(BigInt(n), 2);
  payload.copy(frame, 2 + lengthBytes + 4);
  return frame;
}

/** The payload of the first whole server frame (unmasked) in `buf`, as text; undefined until all of it has come. */
export function firstFrameText(buf: Buffer): string | undefined {
  if (buf.length < 2) return undefined;
  let length = buf[1]! & 0x7f;
  let at = 2;
  if (length === 126) {
    if (buf.length < 4) return undefined;
    length = buf.readUInt16BE(2);
    at = 4;
  } else if (length === 127) {
    if (buf.length < 10) return undefined;
    length = Number(buf.readBigUInt64BE(2));
    at = 10;
  }
  return buf.length < at + length ? undefined : buf.subarray(at, at + length).toString();
}
