import type http from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import pLimit from "p-limit";
import { Closers } from "./closers.js";
import { createBus } from "./cluster/bus.js";
import { connectConfiguredRedis } from "./cluster/redis.js";
import { ClientRegistry } from "./cluster/registry.js";
import { UserBlocks } from "./cluster/user-blocks.js";
import { UserSessions } from "./cluster/user-sessions.js";
import type { Config } from "./config.js";
import { BroadcastDomain, type Envelope } from "./domain/broadcast.js";
import { createHistory } from "./domain/history.js";
import { DrainState } from "./drain.js";
import { createHttpApp } from "./http/routes.js";
import { createHttpServer } from "./http/server.js";
import { type Logger, createLogger } from "./logger.js";
import { type ConnectionCount, createMetrics } from "./metrics.js";
import { BurstWrites } from "./realtime/burst-writes.js";
import { CapacityGate } from "./realtime/capacity.js";
import { clientAddresses } from "./realtime/client-address.js";
import { createTokenVerifier } from "./realtime/client-auth.js";
import { ConnectionHub } from "./realtime/connection.js";
import { ConnectionDirectory } from "./realtime/directory.js";
import { installFrontDoor } from "./realtime/front-door.js";
import { LoopStalls } from "./realtime/loop-stalls.js";
import { createOriginPolicy } from "./realtime/origin.js";
import { PenaltyBox } from "./realtime/penalty.js";
import { PublishLimits } from "./realtime/publish-limits.js";
import { createRateLimiter } from "./realtime/rate-limit.js";
import type { ReplayPolicy } from "./realtime/recovery.js";
import { createIo, createSocketIoGateway, serverSideChannel } from "./realtime/socketio.js";
import { createWsGateway } from "./realtime/ws-gateway.js";
import { ShutdownCoordinator, spreadOut } from "./shutdown.js";
import { warnAboutDefaults } from "./startup-warnings.js";

/** How long a cluster query waits for the other instances. */
const CLUSTER_TIMEOUT_MS = 1_000;
/** How often an instance counts the live instances (an address's publish share is 1/N). */
const COUNT_INSTANCES_MS = 5_000;
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

/**
 * Builds one instance: a list of constructions, each part registering its
 * own close, run in reverse order when the instance closes (closers.ts).
 * Nothing here touches `process`; the entry point and tests both use it.
 */
export async function createApp(config: Config, opts: { log?: Logger; demoDir?: string } = {}): Promise<App> {
  const log = opts.log ?? createLogger({ instance: config.instanceId, level: config.logLevel });
  const closers = new Closers(log);
  try {
    return await assemble(config, opts, log, closers);
  } catch (err) {
    // A start that fails half-way gives back what it built (Redis connections, timers).
    await closers.closeAll();
    throw err;
  }
}

async function assemble(config: Config, opts: { demoDir?: string }, log: Logger, closers: Closers): Promise<App> {
  const part = (component: string) => log.child({ component });
  const drain = new DrainState();
  warnAboutDefaults(config, log);

  const redis = await connectConfiguredRedis(config, log);
  if (redis) closers.add("redis", () => redis.close());

  const registry = new ClientRegistry({ instanceId: config.instanceId, redis, log: part("registry") });
  closers.add("clientId registry", () => registry.stop());

  const readings = { connections: (): ConnectionCount[] => [], pendingSessions: () => 0 };
  const metrics = createMetrics({
    connections: () => readings.connections(),
    clientIds: () => registry.size,
    draining: () => drain.draining,
    pendingSessions: () => readings.pendingSessions(),
  });

  const history = await createHistory(config, redis, part("history"), () => metrics.clusterPublishesSkipped.inc());
  if (history) closers.add("history", () => history.close());

  const users = new UserSessions({ cap: config.maxConnectionsPerUser, instanceId: config.instanceId, redis, log: part("users") });
  closers.add("per-user leases", () => users.stop());

  const http = createHttpServer();
  closers.add("http: requests in flight", () => http.finish());

  const addresses = clientAddresses(config.trustProxy);
  const origins = createOriginPolicy(config);
  const io = createIo(http.server, { config, metrics, origins, addresses, adapter: redis?.adapter("wbs") });
  // io.close() closes the remaining transports and unsubscribes through Redis, which may be away.
  closers.add("socket.io", () => io.close(), { timeoutMs: 1_000 });

  const bus = createBus<Envelope>(serverSideChannel(io), redis, {
    timeoutMs: CLUSTER_TIMEOUT_MS,
    log: part("bus"),
    onSkipped: () => metrics.clusterPublishesSkipped.inc(),
  });

  const blocks = new UserBlocks({ redis, log: part("blocks"), announce: (user, until) => redis?.ready && io.serverSideEmit("wbs:block", { user, until }) });
  if (redis)
    io.on("wbs:block", (b: { user?: unknown; until?: unknown }) => typeof b?.user === "string" && typeof b.until === "number" && blocks.apply(b.user, b.until));
  await blocks.start();
  closers.add("blocks", () => blocks.stop());

  const writes = new BurstWrites(() => metrics.writeBursts.inc());
  closers.add("burst writes", () => writes.stop());

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
  closers.add("periodic notifications", () => domain.stopPeriodic());

  const stalls = new LoopStalls();
  closers.add("loop stalls", () => stalls.stop());
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
  if (redis) {
    const counter = setInterval(countInstances, COUNT_INSTANCES_MS).unref();
    closers.add("instance count", () => clearInterval(counter));
  }
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
  const capacity = new CapacityGate(config.maxConnections, drain);
  const penalties = new PenaltyBox(config.rateLimitPenaltyMs, (address) => redis?.ready && io.serverSideEmit("wbs:penalty", address));
  if (redis) io.on("wbs:penalty", (address: unknown) => penalties.punish(String(address), false));

  const hub = new ConnectionHub({
    config,
    log: part("connections"),
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
    refuseNewSession: capacity.refuse,
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
  const sio = createSocketIoGateway(io, { ...deps, log: part("socket.io") });
  closers.add("socket.io gateway", () => sio.close());
  const wsg = createWsGateway({ ...deps, log: part("ws") });
  closers.add("/ws gateway", () => wsg.close());
  for (const sink of [sio.sink, wsg.sink]) domain.addSink(sink);
  // Engine.IO sessions (polling handshakes included) and /ws connections.
  capacity.count(() => io.engine.clientsCount);
  capacity.count(() => wsg.size);
  readings.connections = () => [...sio.connectionsByTransport(), { transport: "ws", via: "websocket", count: wsg.size }];
  readings.pendingSessions = () => Math.max(0, io.engine.clientsCount - io.of("/").sockets.size);

  const httpApp = createHttpApp({ ...deps, directory, log: part("http"), demoDir: opts.demoDir ?? DEMO_DIR });
  installFrontDoor(http.server, {
    drain,
    refuseNewSession: capacity.refuse,
    ws: wsg,
    metrics,
    log: part("http"),
    app: httpApp,
    onUpgrade: (socket) => writes.track(socket),
  });
  // Closed first: no new request or session while the rest closes.
  closers.add("http: stop listening", () => http.stopListening());

  const shutdown = new ShutdownCoordinator({
    drain,
    log: part("drain"),
    forcedShutdownAfterMs: config.forcedShutdownAfterMs,
    // The spread, then a second for the close handshakes.
    leftoverGraceMs: config.drainCloseSpreadMs + 1_000,
    progressLogEveryMs: config.progressLogEveryMs,
    steps: {
      clientCount: () => registry.size,
      onClientsChange: (listener) => registry.on("change", listener),
      notifyDraining: () => domain.notifyDraining(),
      // Spread over DRAIN_CLOSE_SPREAD_SEC, so the reconnects do not arrive as one wave.
      closeLeftovers: () => spreadOut([...wsg.connections(), ...sio.connections()], config.drainCloseSpreadMs, (close) => close()),
      close: () => closers.closeAll(),
    },
  });

  return {
    config,
    log,
    drain,
    shutdown,
    domain,
    server: http.server,
    async listen() {
      await new Promise<void>((resolve, reject) => {
        http.server.once("error", reject);
        http.server.listen(config.port, config.host, () => {
          http.server.off("error", reject);
          resolve();
        });
      });
      registry.start();
      users.start();
      domain.startPeriodic(config.periodicIntervalMs);
      if (redis) countInstances();
      const address = http.server.address() as AddressInfo;
      log.info({ host: address.address, port: address.port, cluster: Boolean(redis) }, "listening");
      return address;
    },
  };
}
