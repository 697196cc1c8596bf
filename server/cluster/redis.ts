import { createClient } from "redis";
import type { Logger } from "../logger.js";

const createRedisClient = (url: string) =>
  createClient({
    url,
    socket: {
      connectTimeout: 3_000,
      // Back off to 1 s at most, so a restarted Redis is picked up quickly.
      reconnectStrategy: (retries: number) => Math.min(50 * 2 ** retries, 1_000),
    },
  });
type RedisClient = ReturnType<typeof createRedisClient>;

export interface RedisPair {
  /** Commands and PUBLISH (the adapter's pubClient, the registry's client). */
  pub: RedisClient;
  /** SUBSCRIBE only (the adapter's subClient). */
  sub: RedisClient;
  /** True while both connections are up. */
  readonly ready: boolean;
  close(): Promise<void>;
}

/**
 * Connects the two clients the Redis adapter needs. Errors never escape: each
 * client has a listener that logs the first error of an outage and its end;
 * node-redis reconnects (and resubscribes) by itself.
 */
export async function connectRedis(url: string, log: Logger, { connectTimeoutMs = 10_000 } = {}): Promise<RedisPair> {
  const pub = createRedisClient(url);
  const sub = createRedisClient(url); // a connection of its own: SUBSCRIBE blocks it for commands
  for (const [role, client] of [
    ["pub", pub],
    ["sub", sub],
  ] as [string, RedisClient][]) {
    let down = false;
    client.on("error", (err: Error) => {
      if (down) return; // one line an outage, not one a retry
      down = true;
      log.warn({ role, err: err.message }, "redis unreachable; serving local clients only until it returns");
    });
    client.on("ready", () => {
      if (down) log.info({ role }, "redis is back; cross-instance delivery resumes");
      down = false;
    });
  }
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`could not reach Redis at ${url} within ${connectTimeoutMs} ms`)), connectTimeoutMs);
  });
  try {
    await Promise.race([Promise.all([pub.connect(), sub.connect()]), timeout]);
  } catch (err) {
    pub.destroy();
    sub.destroy();
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return {
    pub,
    sub,
    get ready() {
      return pub.isReady && sub.isReady;
    },
    async close() {
      // QUIT flushes what is queued; destroy() when Redis is away so close never hangs.
      await Promise.all(
        [pub, sub].map(async (c: RedisClient) => {
          if (!c.isOpen) return;
          if (!c.isReady) return c.destroy();
          await Promise.race([c.close(), new Promise((r) => setTimeout(r, 500).unref())]).catch(() => undefined);
          if (c.isOpen) c.destroy();
        }),
      );
    },
  };
}
