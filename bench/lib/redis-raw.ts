import net from "node:net";
import { createClient } from "redis";
import { withTimeout } from "../../harness/timeouts.js";

/**
 * Redis for the scaling scenario: one-shot commands through node-redis, and
 * subscribers that read and discard what Redis pushes on a bare socket (a
 * client library would parse every message in this process, and what is
 * measured is Redis's own CPU).
 */

function endpoint(url: string): { host: string; port: number } {
  const u = new URL(url);
  return { host: u.hostname || "127.0.0.1", port: Number(u.port) || 6379 };
}

const encode = (args: string[]): string => `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`;

/** Runs one command on a connection of its own (node-redis) and answers its reply, within `timeoutMs`. */
export async function redisCommand(url: string, args: string[], timeoutMs = 5_000): Promise<unknown> {
  const client = createClient({ url, socket: { connectTimeout: timeoutMs, reconnectStrategy: false } });
  client.on("error", () => undefined); // the rejected command says it
  try {
    await client.connect();
    return await withTimeout(client.sendCommand(args), timeoutMs, `redis: an answer to ${args[0]}`);
  } finally {
    client.destroy();
  }
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
