import net from "node:net";

/**
 * Just enough RESP for the scaling scenario, on a socket of its own: one-shot
 * commands (PUBSUB, INFO) and subscribers that read and discard what Redis
 * pushes. No client library: its parsing would cost this process per message,
 * and what is measured is Redis's own CPU.
 */

type Reply = string | number | null | Reply[];

function endpoint(url: string): { host: string; port: number } {
  const u = new URL(url);
  return { host: u.hostname || "127.0.0.1", port: Number(u.port) || 6379 };
}

const encode = (args: string[]): string => `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`;

/** Parses one reply at `pos`; undefined when the buffer does not hold all of it yet. */
function parse(buf: Buffer, pos: number): { value: Reply; end: number } | undefined {
  const eol = buf.indexOf("\r\n", pos);
  if (eol < 0) return undefined;
  const head = buf.toString("latin1", pos + 1, eol);
  switch (String.fromCharCode(buf[pos]!)) {
    case "+":
      return { value: head, end: eol + 2 };
    case "-":
      throw new Error(`redis: ${head}`);
    case ":":
      return { value: Number(head), end: eol + 2 };
    case "$": {
      const n = Number(head);
      if (n < 0) return { value: null, end: eol + 2 };
      if (buf.length < eol + 2 + n + 2) return undefined;
      return { value: buf.toString("utf8", eol + 2, eol + 2 + n), end: eol + 2 + n + 2 };
    }
    case "*": {
      const n = Number(head);
      if (n < 0) return { value: null, end: eol + 2 };
      const items: Reply[] = [];
      let at = eol + 2;
      for (let i = 0; i < n; i++) {
        const item = parse(buf, at);
        if (!item) return undefined;
        items.push(item.value);
        at = item.end;
      }
      return { value: items, end: at };
    }
    default:
      throw new Error(`redis: unexpected reply type ${JSON.stringify(String.fromCharCode(buf[pos]!))}`);
  }
}

/** Runs one command on a fresh connection and answers its reply (bounded by `timeoutMs`). */
export function redisCommand(url: string, args: string[], timeoutMs = 5_000): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(endpoint(url));
    let buf = Buffer.alloc(0);
    const done = (err: Error | undefined, value?: Reply) => {
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(value ?? null);
    };
    const timer = setTimeout(() => done(new Error(`redis: no answer to ${args[0]} within ${timeoutMs} ms`)), timeoutMs);
    sock.on("error", (err) => done(err));
    sock.on("connect", () => sock.write(encode(args)));
    sock.on("data", (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      try {
        const r = parse(buf, 0);
        if (r) done(undefined, r.value);
      } catch (err) {
        done(err as Error);
      }
    });
  });
}

/** A subscriber to `channel` that discards what it gets; resolves once Redis confirmed the subscription. */
export async function discardingSubscriber(url: string, channel: string, command = "SUBSCRIBE"): Promise<{ bytes(): number; close(): void }> {
  const sock = net.connect(endpoint(url));
  let bytes = 0;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis: ${command} ${channel} not confirmed within 5 s`)), 5_000);
    sock.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.on("connect", () => sock.write(encode([command, channel])));
    sock.once("data", () => {
      clearTimeout(timer);
      resolve();
    });
  });
  sock.on("data", (chunk) => {
    bytes += chunk.length;
  });
  sock.on("error", () => undefined);
  return { bytes: () => bytes, close: () => sock.destroy() };
}
