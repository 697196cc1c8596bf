import type { EventEmitter } from "node:events";
import { createAdapter, createShardedAdapter } from "@socket.io/redis-adapter";
import type { ServerOptions } from "socket.io";
import { createClient, createCluster } from "redis";
import type { Logger } from "../logger.js";

/** Where Redis is: one server, or the seed nodes of a Redis Cluster. */
export type RedisTarget = { kind: "single"; url: string } | { kind: "cluster"; nodes: readonly string[] };

const socket = {
  connectTimeout: 3_000,
  // Back off to 1 s at most, so a restarted Redis is picked up quickly.
  reconnectStrategy: (retries: number) => Math.min(50 * 2 ** retries, 1_000),
};
// No command timeout (node-redis sets none): a timed-out append may still have
// run, and its retry would add it twice; commands fail when the connection
// does, and the callers that must answer fast bound their own wait (the
// registry's claim, the bus's requests, a replay's read).
const createSingle = (url: string, opts: { disableOfflineQueue?: boolean } = {}) => createClient({ url, socket, ...opts });
// Retry a lost node often: each failed attempt is what leads to the topology refresh below.
const clusterDefaults = { socket: { ...socket, reconnectStrategy: (retries: number) => Math.min(50 * 2 ** retries, 250) } };
const createClusterClient = (nodes: readonly string[]) =>
  createCluster({
    rootNodes: nodes.map((url) => ({ url })),
    // A command for a node that is down fails at once instead of waiting for
    // it: the history retries its appends in order itself (a command left
    // waiting on a dead master would fail after newer ones had landed on its
    // replica, out of order).
    defaults: { ...clusterDefaults, disableOfflineQueue: true },
    // A node that keeps failing to reconnect (a dead master) makes the client
    // re-read the topology after this long and follow the promoted replica.
    topologyRefreshOnReconnectionAttemptStrategy: 300,
  });
type SingleClient = ReturnType<typeof createSingle>;
type ClusterClient = ReturnType<typeof createClusterClient>;

/**
 * What the service asks of Redis, the same on one server and on a cluster.
 * On a cluster every key of one command (or script) must share a hash slot;
 * callers give the key that routes it and use hash tags for the rest.
 */
export interface RedisConnection {
  readonly kind: RedisTarget["kind"];
  /** True while the connections are up (on a cluster: the client is connected; one shard may still be failing over). */
  readonly ready: boolean;
  /** True while commands can be sent (the subscriber may be reconnecting meanwhile). */
  readonly commandsReady: boolean;
  /** One command; `routeKey` picks the shard on a cluster. */
  command(routeKey: string | undefined, args: string[]): Promise<unknown>;
  /**
   * Delivery of one channel. On a cluster a sharded channel (SSUBSCRIBE), kept
   * on the shard of its hash slot: scripts publish to it with `publishCommand`.
   */
  subscribe(channel: string, listener: (message: string) => void): Promise<void>;
  readonly publishCommand: "PUBLISH" | "SPUBLISH";
  /** After a reconnect (Redis back, or a node of the cluster back or replaced). */
  onReconnect(listener: () => void): void;
  /** After the subscriber reconnected and resubscribed (not at the first connect). */
  onSubscriberReady(listener: () => void): void;
  /** The Socket.IO adapter: classic pub/sub on one server, sharded pub/sub (Redis 7) on a cluster. */
  adapter(key: string): NonNullable<ServerOptions["adapter"]>;
  close(): Promise<void>;
}

/** Logs the first error of an outage and its end; node-redis reconnects (and resubscribes) by itself. */
function logOutages(emitter: EventEmitter, role: string, log: Logger, events: { error: string; ready: string }): void {
  let down = false;
  emitter.on(events.error, (err: Error) => {
    if (down) return; // one line an outage, not one a retry
    down = true;
    log.warn({ role, err: err?.message }, "redis unreachable; serving local clients only until it returns");
  });
  emitter.on(events.ready, () => {
    if (down) log.info({ role }, "redis is back; cross-instance delivery resumes");
    down = false;
  });
}

/** Bounded: a Redis that does not answer fails the start-up rather than hanging it. */
async function connectWithin(clients: { connect(): Promise<unknown>; destroy(): void }[], timeoutMs: number, what: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`could not reach ${what} within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    await Promise.race([Promise.all(clients.map((c) => c.connect())), timeout]);
  } catch (err) {
    for (const c of clients) c.destroy();
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** QUIT flushes what is queued; destroy() when Redis is away so close never hangs. */
async function closeGently(c: { isOpen: boolean; isReady: boolean; close(): Promise<unknown>; destroy(): void }): Promise<void> {
  if (!c.isOpen) return;
  if (!c.isReady) return c.destroy();
  await Promise.race([c.close(), new Promise((r) => setTimeout(r, 500).unref())]).catch(() => undefined);
  if (c.isOpen) c.destroy();
}

/** Connects a command connection and a subscriber connection (SUBSCRIBE blocks a connection for commands). */
export async function connectRedis(target: RedisTarget, log: Logger, { connectTimeoutMs = 10_000 } = {}): Promise<RedisConnection> {
  return target.kind === "single" ? connectSingle(target.url, log, connectTimeoutMs) : connectCluster(target.nodes, log, connectTimeoutMs);
}

async function connectSingle(url: string, log: Logger, connectTimeoutMs: number): Promise<RedisConnection> {
  // Commands fail at once while disconnected instead of waiting in node-redis's
  // queue: the history holds and retries its appends in order itself, and the
  // adapter's inter-server messages would otherwise arrive minutes late.
  const pub: SingleClient = createSingle(url, { disableOfflineQueue: true });
  // The subscriber keeps its queue: it resubscribes by itself.
  const sub: SingleClient = createSingle(url);
  logOutages(pub, "pub", log, { error: "error", ready: "ready" });
  logOutages(sub, "sub", log, { error: "error", ready: "ready" });
  await connectWithin([pub, sub], connectTimeoutMs, `Redis at ${redact(url)}`);
  return {
    kind: "single",
    get ready() {
      return pub.isReady && sub.isReady;
    },
    get commandsReady() {
      return pub.isReady;
    },
    command: (_key, args) => pub.sendCommand(args),
    subscribe: (channel, listener) => sub.subscribe(channel, listener),
    publishCommand: "PUBLISH",
    onReconnect: (listener) => void pub.on("ready", listener),
    onSubscriberReady: (listener) => void sub.on("ready", listener),
    // Only its inter-server channel is used (cluster/bus.ts has its own requests), so no requestsTimeout.
    adapter: (key) => createAdapter(publishesHandled(pub, "publish", log), sub, { key }),
    close: async () => void (await Promise.all([closeGently(pub), closeGently(sub)])),
  };
}

async function connectCluster(nodes: readonly string[], log: Logger, connectTimeoutMs: number): Promise<RedisConnection> {
  const pub: ClusterClient = createClusterClient(nodes);
  // The subscriber keeps its offline queue: it resubscribes by itself after a failover.
  const sub: ClusterClient = pub.duplicate({ defaults: clusterDefaults });
  // A cluster client reports a node's troubles as node-error/node-ready and its own as error.
  for (const [role, client] of [
    ["pub", pub],
    ["sub", sub],
  ] as const) {
    logOutages(client, role, log, { error: "node-error", ready: "node-ready" });
    client.on("error", (err: Error) => log.debug({ role, err: err.message }, "redis cluster client error"));
  }
  await connectWithin([pub, sub], connectTimeoutMs, `the Redis Cluster at ${nodes.map(redact).join(", ")}`);
  return {
    kind: "cluster",
    get ready() {
      return pub.isReady && sub.isReady;
    },
    get commandsReady() {
      return pub.isReady;
    },
    command: (key, args) => pub.sendCommand(key, false, args),
    subscribe: (channel, listener) => sub.sSubscribe(channel, listener),
    publishCommand: "SPUBLISH",
    onReconnect: (listener) => void pub.on("node-ready", listener),
    onSubscriberReady: (listener) => void sub.on("node-ready", listener),
    // Static: two channels a namespace. "dynamic" would add one a room, and
    // subscribe and unsubscribe whenever a room appears on an instance (the
    // replaying room does at every recovery); with history on, broadcasts take
    // the history channel anyway.
    adapter: (key) => createShardedAdapter(publishesHandled(pub, "sPublish", log), sub, { channelPrefix: key, subscriptionMode: "static" }),
    close: async () => void (await Promise.all([closeGently(pub), closeGently(sub)])),
  };
}

/**
 * The client as the Socket.IO adapter sees it, with a handler on every
 * publish: the adapter publishes without awaiting (checked against
 * @socket.io/redis-adapter 8.3), so a publish that fails while Redis is away
 * would be an unhandled rejection. Its messages are best effort anyway (the
 * bus skips them while Redis is away).
 */
function publishesHandled<C extends object>(client: C, method: "publish" | "sPublish", log: Logger): C {
  return new Proxy(client, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target) as unknown;
      if (typeof value !== "function" || prop === "constructor") return value;
      // Bound: node-redis methods use private fields of the client itself.
      if (prop !== method) return value.bind(target);
      return (...args: unknown[]) => {
        const sent = (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
        sent.catch((err: Error) => log.debug({ err: err.message }, "inter-server publish failed"));
        return sent;
      };
    },
  });
}

/** A URL without its password, for logs. */
export const redact = (url: string): string => url.replace(/\/\/[^@]*@/, "//***@");

/** The Redis the configuration names (REDIS_CLUSTER_NODES, else REDIS_URL), connected; undefined when it names none (one instance alone). */
export async function connectConfiguredRedis(
  config: { redisUrl: string | undefined; redisClusterNodes: readonly string[] | undefined },
  log: Logger,
): Promise<RedisConnection | undefined> {
  const target: RedisTarget | undefined = config.redisClusterNodes
    ? { kind: "cluster", nodes: config.redisClusterNodes }
    : config.redisUrl
      ? { kind: "single", url: config.redisUrl }
      : undefined;
  if (!target) return undefined;
  const redis = await connectRedis(target, log.child({ component: "redis" }));
  log.info(
    { redis: target.kind === "single" ? redact(target.url) : target.nodes.map(redact), kind: target.kind },
    target.kind === "single" ? "connected to redis: cluster mode" : "connected to a redis cluster (sharded pub/sub): cluster mode",
  );
  return redis;
}
