import http from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { type ClusterBus, localBus, redisBus } from "./cluster/bus.js";
import { type RedisConnection, type RedisTarget, connectRedis, redact } from "./cluster/redis.js";
import { ClientRegistry } from "./cluster/registry.js";
import { UserBlocks } from "./cluster/user-blocks.js";
import { UserSessions } from "./cluster/user-sessions.js";
import { type Config, isLoopbackHost } from "./config.js";
import { BroadcastDomain, type Envelope } from "./domain/broadcast.js";
import { DrainState } from "./drain.js";
import { ServiceError } from "./errors.js";
import { createHttpApp } from "./http/routes.js";
import { type Logger, createLogger } from "./logger.js";
import { type ConnectionCount, createMetrics } from "./metrics.js";
import type { InterServerEvents } from "./protocol.js";
import { createTokenVerifier } from "./realtime/client-auth.js";
import { ConnectionHub } from "./realtime/connection.js";
import { ConnectionDirectory } from "./realtime/directory.js";
import { BurstWrites } from "./realtime/burst-writes.js";
import { installFrontDoor } from "./realtime/front-door.js";
import { createOriginPolicy } from "./realtime/origin.js";
import { PenaltyBox } from "./realtime/penalty.js";
import { createRateLimiter } from "./realtime/rate-limit.js";
import { createIo, createSocketIoGateway } from "./realtime/socketio.js";
import { createWsGateway } from "./realtime/ws-gateway.js";
import { DEFAULT_HOLD_MS, MemoryLog, RedisLog } from "./domain/history.js";
import pLimit from "p-limit";
import { clientAddresses } from "./realtime/client-address.js";
import { LoopStalls } from "./realtime/loop-stalls.js";
import { PublishLimits } from "./realtime/publish-limits.js";
import type { ReplayPolicy } from "./realtime/recovery.js";
import { ShutdownCoordinator, spreadOut } from "./shutdown.js";

/** How long a cluster query waits for the other instances. */
const CLUSTER_TIMEOUT_MS = 1_000;
const DEMO_DIR = fileURLToPath(new URL("../client-demo/public", import.meta.url));

export interface App {
  readonly config: Config;
  readonly log: Logger;
  readonly drain: DrainState;
  readonly shutdown: ShutdownCoordinator;
  readonly domain: BroadcastDomain;
  readonly server: http.Server;
  /** Resolves with the bound address (read it back when PORT=0). */
  listen(): Promise<AddressInfo>;
}

const redisTarget = (config: Config): RedisTarget | undefined =>
  config.redisClusterNodes ? { kind: "cluster", nodes: config.redisClusterNodes } : config.redisUrl ? { kind: "single", url: config.redisUrl } : undefined;

/**
 * Builds one instance: HTTP API, Socket.IO, /ws, the broadcast domain, the
 * cluster bus (Redis when REDIS_URL or REDIS_CLUSTER_NODES is set) and the drain coordinator. Nothing
 * here touches `process`; the entry point and tests both use it.
 */
export async function createApp(config: Config, opts: { log?: Logger; demoDir?: string } = {}): Promise<App> {
  const log = opts.log ?? createLogger({ instance: config.instanceId, level: config.logLevel });
  const drain = new DrainState();

  let redis: RedisConnection | undefined;
  const target = redisTarget(config);
  if (target) {
    redis = await connectRedis(target, log.child({ component: "redis" }));
    const where = target.kind === "single" ? redact(target.url) : target.nodes.map(redact);
    log.info(
      { redis: where, kind: target.kind },
      target.kind === "single" ? "connected to redis: cluster mode" : "connected to a redis cluster (sharded pub/sub): cluster mode",
    );
  }

  const registry = new ClientRegistry({ instanceId: config.instanceId, redis, log: log.child({ component: "registry" }) });
  const server = http.createServer();
  // Idle connections of Socket.IO and /ws are kept alive by their own pings; these
  // bound how long a slow or silent HTTP client may hold a socket.
  server.headersTimeout = 20_000;
  server.requestTimeout = 30_000;
  // Longer than nginx's upstream keepalive_timeout (60 s), so the proxy, not
  // us, closes an idle keep-alive connection: never one it is sending on.
  server.keepAliveTimeout = 75_000;

  let connections = (): ConnectionCount[] => [];
  let pendingSessions = (): number => 0;
  const metrics = createMetrics({
    connections: () => connections(),
    clientIds: () => registry.size,
    draining: () => drain.draining,
    pendingSessions: () => pendingSessions(),
  });
  const addresses = clientAddresses(config.trustProxy);

  const origins = createOriginPolicy(config);
  if (config.adminToken === undefined && !config.adminOpen) {
    log[isLoopbackHost(config.host) ? "info" : "warn"](
      { host: config.host },
      "admin endpoints answer only requests from this machine that came through no proxy (others get 403): set ADMIN_TOKEN, or ADMIN_OPEN=true on a trusted network",
    );
  }
  if (config.publicOrigins === undefined && !isLoopbackHost(config.host)) {
    log.warn(
      { host: config.host },
      "PUBLIC_ORIGINS is unset: browser pages are accepted from loopback origins only; set it to the origin(s) users load the page from",
    );
  }
  const io = createIo(server, {
    config,
    metrics,
    origins,
    addresses,
    adapter: redis?.adapter("wbs"),
  });
  const bus: ClusterBus<Envelope> = redis
    ? redisBus<Envelope>(
        {
          // The bus is generic; the events it sends are InterServerEvents.
          serverSideEmit: (event, ...args) => io.serverSideEmit(event as keyof InterServerEvents, ...(args as [never])),
          on: (event, listener) => io.on(event as keyof InterServerEvents, listener as (arg: unknown) => void),
          serverCount: () => io.of("/").adapter.serverCount(),
        },
        {
          timeoutMs: CLUSTER_TIMEOUT_MS,
          redisReady: () => redis.ready,
          log: log.child({ component: "bus" }),
          onSkipped: () => metrics.clusterPublishesSkipped.inc(),
        },
      )
    : localBus<Envelope>();
  const limits = { maxEntries: config.historySize, ttlMs: config.historyTtlMs };
  const history =
    config.historySize === 0
      ? undefined
      : redis
        ? new RedisLog(redis, { ...limits, holdMs: config.redisHoldMs ?? DEFAULT_HOLD_MS[redis.kind] }, log.child({ component: "history" }), () =>
            metrics.clusterPublishesSkipped.inc(),
          )
        : new MemoryLog(limits);
  await history?.start();
  const writes = new BurstWrites(() => metrics.writeBursts.inc());
  const domain = new BroadcastDomain({
    beforeDelivery: () => writes.beforeDelivery(),
    instanceId: config.instanceId,
    bus,
    history,
    registry,
    drain,
    log,
    metrics,
    maxMessageBytes: config.maxMessageBytes,
    statusIntervalMs: config.statusIntervalMs,
  });
  const stalls = new LoopStalls();
  const stallMs = () => stalls.recentMs();
  const limiter = createRateLimiter({
    perSec: config.rateLimitPerSec,
    burst: config.rateLimitBurst,
    disconnectAfter: config.rateLimitDisconnectAfter,
    stallMs,
  });
  // Live instances, for the share of an address's rate each one allows.
  let instances = 1;
  const countInstances = () =>
    void io
      .of("/")
      .adapter.serverCount()
      .then(
        (n) => (instances = Math.max(1, n)),
        () => undefined,
      );
  const instanceCounter = redis ? setInterval(countInstances, 5_000).unref() : undefined;
  const publishLimits = new PublishLimits({
    address: config.addressRateLimit,
    instance: config.instanceRateLimit,
    instances: () => instances,
    stallMs,
    refused: (transport, scope) => metrics.publishLimited.inc({ transport, scope }),
    disconnectAfter: config.rateLimitDisconnectAfter,
  });
  const replays: ReplayPolicy = {
    budget: { entries: config.historySize, bytes: config.replayMaxBytes },
    slots: pLimit(config.replayConcurrency),
    // Half the slow-client limit: a replay waits for its client to read instead of being cut and paying again.
    paceBytes: config.maxBufferedBytes > 0 ? config.maxBufferedBytes / 2 : Number.POSITIVE_INFINITY,
    stallMs: config.replayStallMs,
    outcome: (outcome) => metrics.recoveries.inc({ outcome }),
  };
  const verifyToken = await createTokenVerifier(config.auth);
  // Engine.IO sessions (polling handshakes included) and /ws connections.
  const full = () => config.maxConnections > 0 && io.engine.clientsCount + wsg.size >= config.maxConnections;
  // The one gate for new sessions, Engine.IO and /ws alike: nothing is taken yet, and a 503 sends nginx to another instance.
  const refuseNewSession = (): ServiceError | undefined =>
    drain.draining ? new ServiceError("DRAINING") : full() ? new ServiceError("OVER_CAPACITY", String(config.maxConnections)) : undefined;
  const penalties = new PenaltyBox(config.rateLimitPenaltyMs, (address) => {
    if (redis?.ready) io.serverSideEmit("wbs:penalty", address);
  });
  if (redis) io.on("wbs:penalty", (address: unknown) => penalties.punish(String(address), false));
  const users = new UserSessions({ cap: config.maxConnectionsPerUser, instanceId: config.instanceId, redis, log: log.child({ component: "users" }) });
  const blocks = new UserBlocks({
    redis,
    log: log.child({ component: "blocks" }),
    announce: (user, until) => {
      if (redis?.ready) io.serverSideEmit("wbs:block", { user, until });
    },
  });
  if (redis) {
    io.on("wbs:block", (block: { user?: unknown; until?: unknown }) => {
      if (typeof block?.user === "string" && typeof block.until === "number") blocks.apply(block.user, block.until);
    });
  }
  await blocks.start();
  const hub = new ConnectionHub({
    config,
    log: log.child({ component: "connections" }),
    metrics,
    domain,
    registry,
    users,
    limiter,
    penalties,
    publishLimits,
    replays,
    verifyToken,
  });
  const directory = new ConnectionDirectory(hub, domain, blocks);
  const deps = {
    config,
    origins,
    limiter,
    penalties,
    verifyToken,
    refuseNewSession,
    drain,
    registry,
    users,
    blocks,
    hub,
    domain,
    metrics,
    publishLimits,
    addresses,
    replays,
  };
  const sio = createSocketIoGateway(io, { ...deps, log: log.child({ component: "socket.io" }) });
  const wsg = createWsGateway({ ...deps, log: log.child({ component: "ws" }) });
  domain.addSink(sio.sink);
  domain.addSink(wsg.sink);
  connections = () => [...sio.connectionsByTransport(), { transport: "ws", via: "websocket", count: wsg.size }];
  pendingSessions = () => Math.max(0, io.engine.clientsCount - io.of("/").sockets.size);

  const httpApp = createHttpApp({ ...deps, directory, log: log.child({ component: "http" }), demoDir: opts.demoDir ?? DEMO_DIR });
  installFrontDoor(server, {
    drain,
    refuseNewSession,
    ws: wsg,
    metrics,
    log: log.child({ component: "http" }),
    app: httpApp,
    onUpgrade: (socket) => writes.track(socket),
  });

  const shutdown = new ShutdownCoordinator({
    drain,
    log: log.child({ component: "drain" }),
    forcedShutdownAfterMs: config.forcedShutdownAfterMs,
    // The spread, then a second for the close handshakes.
    leftoverGraceMs: config.drainCloseSpreadMs + 1_000,
    progressLogEveryMs: config.progressLogEveryMs,
    steps: {
      clientCount: () => registry.size,
      onClientsChange: (listener) => registry.on("change", listener),
      notifyDraining: () => domain.notifyDraining(),
      closeLeftovers: () => {
        // Spread over DRAIN_CLOSE_SPREAD_SEC, so the reconnects do not arrive as one wave.
        spreadOut([...wsg.connections(), ...sio.connections()], config.drainCloseSpreadMs, (close) => close());
      },
      close: async () => {
        domain.stopPeriodic();
        writes.stop();
        stalls.stop();
        clearInterval(instanceCounter);
        // Emitted once the server stopped listening and its last connection ended.
        const drained = server.listening ? new Promise((r) => server.once("close", r)) : Promise.resolve();
        if (server.listening) server.close();
        server.closeIdleConnections();
        wsg.close();
        sio.close();
        // io.close() closes the remaining transports and unsubscribes through
        // Redis, which may be away: bound the wait.
        await Promise.race([io.close(), new Promise((r) => setTimeout(r, 1_000).unref())]);
        // Let requests in flight (an HTTP broadcast waits up to the cluster
        // timeout for the other instances) finish; then cut what is left.
        await Promise.race([drained, new Promise((r) => setTimeout(r, CLUSTER_TIMEOUT_MS + 1_000).unref())]);
        server.closeAllConnections();
        await drained;
        await registry.stop();
        await users.stop();
        blocks.stop();
        history?.close();
        await redis?.close();
      },
    },
  });

  return {
    config,
    log,
    drain,
    shutdown,
    domain,
    server,
    async listen() {
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(config.port, config.host, () => {
          server.off("error", reject);
          resolve();
        });
      });
      registry.start();
      users.start();
      domain.startPeriodic(config.periodicIntervalMs);
      if (redis) countInstances();
      const address = server.address() as AddressInfo;
      log.info({ host: address.address, port: address.port, cluster: Boolean(redis) }, "listening");
      return address;
    },
  };
}
