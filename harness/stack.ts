import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { type InstanceProcess, START_TIMEOUT_MS, startInstance } from "./instance.js";
import { INSTANCE_COUNT, NGINX_CONF, type NginxLimits, type NginxProcess, renderNginxConf, startNginx, workerNofileCap } from "./nginx.js";
import { freePortRange } from "./ports.js";
import type { Exit } from "./processes.js";
import { type RedisCluster, startRedisCluster } from "./redis-cluster.js";
import { type RedisProcess, startRedis } from "./redis.js";
import { poll } from "./waiting.js";

/**
 * The four-instance stack on loopback: Redis (unless given), ws1..ws4 and
 * nginx with the shipped nginx.conf in front of them, the topology of
 * docker-compose.yml; instances drained and replaced one at a time.
 */

export interface Stack {
  /** http://127.0.0.1:<nginxPort> */
  readonly url: string;
  readonly nginxPort: number;
  /** The nginx master process. */
  readonly nginxPid: number;
  /** nginx's error.log. */
  readonly nginxErrorLog: string;
  /** The one Redis (REDIS_URL), or the seed nodes of the Redis Cluster (REDIS_CLUSTER_NODES), comma-separated. */
  readonly redisUrl: string;
  /** The redis-server it started; undefined when given a Redis or running a cluster. */
  readonly redis: RedisProcess | undefined;
  /** The Redis Cluster it started (option `redisCluster: true`). */
  readonly redisCluster: RedisCluster | undefined;
  /** The token the instances require on admin endpoints (ADMIN_TOKEN); undefined when `env.ADMIN_TOKEN` is "" (then nothing answers them through nginx). */
  readonly adminToken: string | undefined;
  /** Index i -> INSTANCE_ID `ws${i+1}` on port basePort+i+1. The same array throughout; restarts replace its entries. */
  readonly instances: InstanceProcess[];
  /** Direct URL of instance i (bypassing nginx). */
  instanceUrl(i: number): string;
  /**
   * Drain instance i (SIGTERM), wait for it to exit (it exits when its last
   * client leaves or at FORCED_SHUTDOWN_AFTER_SEC; SIGKILL if it overstays
   * that by the stop grace), start its replacement on the same port with the
   * same env, resolve when the replacement's /readyz answers 200.
   * Restarts of the same index queue up behind each other.
   */
  restartInstance(i: number): Promise<void>;
  /** restartInstance(0..3) one after the other. */
  rollingRestart(): Promise<void>;
  /**
   * SIGTERM every instance (they drain; one already draining is not signalled
   * again), wait for them (SIGKILL after `graceMs`, by default the drain
   * deadline plus 15 s), then stop nginx and the redis-server it started.
   * Idempotent; leaves no process running.
   */
  stop(opts?: { graceMs?: number }): Promise<void>;
}

export type StackEvent =
  /** Spawned (its log records are in `instance.logs` as they come). */
  | { type: "instance-starting"; index: number; instance: InstanceProcess; restart: boolean }
  /** A replacement (or one of the first four) answers /readyz 200. */
  | { type: "instance-ready"; index: number; instance: InstanceProcess; restart: boolean }
  /** SIGTERM sent: it drains. */
  | { type: "instance-draining"; index: number; instance: InstanceProcess }
  /** It exited; `expected` is false when nobody asked it to (a crash). */
  | { type: "instance-exited"; index: number; instance: InstanceProcess; exit: Exit; expected: boolean }
  | { type: "nginx-exited"; exit: Exit; expected: boolean };

export interface StackOptions {
  /** nginx on basePort, instance i on basePort+i+1. Default: a free range. */
  basePort?: number;
  /** More environment for every instance (PORT, HOST, INSTANCE_ID and REDIS_URL are set by the stack). */
  env?: Record<string, string>;
  /** Use this Redis instead of starting one. */
  redisUrl?: string;
  /**
   * A Redis Cluster instead of one Redis: true starts three masters and three
   * replicas on loopback; a string is the seed nodes of one already running
   * (REDIS_CLUSTER_NODES).
   */
  redisCluster?: boolean | string;
  /** Lifecycle notifications (the CLI prints them). Must not throw. */
  onEvent?: (event: StackEvent) => void;
  /** Other nginx per-address limits than shipped (tests use small ones); see NginxLimits. Unset: as shipped. */
  nginxLimits?: NginxLimits;
}

/** Starts redis (unless given), ws1..ws4 and nginx in front of them on loopback. */
export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  const basePort = opts.basePort ?? (await freePortRange(INSTANCE_COUNT + 1));
  const onEvent = opts.onEvent ?? (() => undefined);
  const forcedSec = Number(opts.env?.FORCED_SHUTDOWN_AFTER_SEC || process.env.FORCED_SHUTDOWN_AFTER_SEC || 1800);
  const defaultGraceMs = (Number.isFinite(forcedSec) && forcedSec > 0 ? forcedSec * 1000 : 1_800_000) + 15_000;

  const tmpDir = await mkdtemp(path.join(os.tmpdir(), "ws-stack-"));
  // If this process exits without stop(), processes.ts kills the processes; this takes the files.
  const removeTmpDir = (): void => rmSync(tmpDir, { recursive: true, force: true });
  process.on("exit", removeTmpDir);

  let redis: RedisProcess | undefined;
  let redisCluster: RedisCluster | undefined;
  let nginx: NginxProcess | undefined;
  const instances: InstanceProcess[] = [];
  /** Every instance process that may still run, and whether we sent it SIGTERM. */
  const live = new Map<InstanceProcess, { signalled: boolean; index: number }>();
  const launching = new Set<Promise<unknown>>();
  let stopping: Promise<void> | undefined;
  let stopGraceMs = defaultGraceMs;

  const clustered = Boolean(opts.redisCluster);
  // Admin calls come through nginx, so they need a token: the caller's, or a fresh one ("" for none).
  const adminToken = (opts.env?.ADMIN_TOKEN ?? process.env.ADMIN_TOKEN ?? randomBytes(24).toString("hex")) || undefined;
  const instanceEnv = (i: number, redisUrl: string): Record<string, string> => ({
    // Behind nginx (which connects from 127.0.0.1): the client's address is what it appends to X-Forwarded-For.
    TRUST_PROXY: "127.0.0.1",
    ...opts.env,
    ADMIN_TOKEN: adminToken ?? "",
    PORT: String(basePort + i + 1),
    HOST: "127.0.0.1",
    INSTANCE_ID: `ws${i + 1}`,
    ...(clustered ? { REDIS_CLUSTER_NODES: redisUrl } : { REDIS_URL: redisUrl }),
  });

  /** Starts instance i; resolves once it logged "listening" and its /readyz answers 200. */
  const launch = (i: number, redisUrl: string, restart: boolean): Promise<InstanceProcess> => {
    const p = (async () => {
      const inst = await startInstance({ env: instanceEnv(i, redisUrl), waitForListening: false });
      live.set(inst, { signalled: false, index: i });
      onEvent({ type: "instance-starting", index: i, instance: inst, restart });
      void inst.exited.then((exit) => {
        const state = live.get(inst);
        live.delete(inst);
        onEvent({ type: "instance-exited", index: i, instance: inst, exit, expected: Boolean(state?.signalled || stopping) });
      });
      try {
        // Its own /readyz, not its "listening" line: LOG_LEVEL may hide that.
        await waitForReady(inst, START_TIMEOUT_MS);
      } catch (err) {
        await killInstance(inst, 2_000);
        throw new Error(`ws${i + 1} (port ${basePort + i + 1}) did not start: ${(err as Error).message}`, { cause: err });
      }
      onEvent({ type: "instance-ready", index: i, instance: inst, restart });
      return inst;
    })();
    launching.add(p);
    void p.then(
      () => launching.delete(p),
      () => launching.delete(p),
    );
    return p;
  };

  const drain = (inst: InstanceProcess): void => {
    const state = live.get(inst);
    if (!state || state.signalled) return;
    state.signalled = true;
    onEvent({ type: "instance-draining", index: state.index, instance: inst });
    inst.signal("SIGTERM");
  };

  /** Waits for an exit, SIGKILL after `graceMs`. */
  const killInstance = async (inst: InstanceProcess, graceMs: number): Promise<Exit> => {
    const state = live.get(inst);
    if (state && !state.signalled) {
      state.signalled = true;
      inst.signal("SIGTERM");
    }
    return inst.awaitExit(graceMs);
  };

  const stopAll = async (graceMs: number): Promise<void> => {
    const errors: unknown[] = [];
    // Instances first (they drain through nginx), then nginx, then Redis.
    for (const inst of live.keys()) drain(inst);
    await Promise.allSettled([...launching]);
    for (const inst of live.keys()) drain(inst);
    await Promise.all([...live.keys()].map((inst) => inst.awaitExit(graceMs)));
    try {
      await nginx?.stop();
    } catch (err) {
      errors.push(err);
    }
    try {
      await redis?.stop();
      await redisCluster?.stop();
    } catch (err) {
      errors.push(err);
    }
    await rm(tmpDir, { recursive: true, force: true }).catch(() => undefined);
    process.removeListener("exit", removeTmpDir);
    if (errors.length > 0) throw errors[0];
  };

  try {
    // nginx workers run as another user when we are root; they need to reach their temp dirs.
    await chmod(tmpDir, 0o755);
    let redisUrl: string;
    if (typeof opts.redisCluster === "string") {
      redisUrl = opts.redisCluster;
    } else if (opts.redisCluster) {
      redisCluster = await startRedisCluster();
      redisUrl = redisCluster.seeds;
    } else if (opts.redisUrl) {
      redisUrl = opts.redisUrl;
    } else {
      redis = await startRedis();
      redisUrl = redis.url;
    }

    const confPath = path.join(tmpDir, "nginx.conf");
    const source = await readFile(NGINX_CONF, "utf8");
    await writeFile(confPath, renderNginxConf(source, basePort, tmpDir, { maxNofile: workerNofileCap(), limits: opts.nginxLimits }));

    // The four instances and nginx in parallel; the first failure stops the others at once.
    const parts: Promise<unknown>[] = [
      ...Array.from({ length: INSTANCE_COUNT }, (_, i) => launch(i, redisUrl, false)),
      startNginx({ confPath, tmpDir, port: basePort, onExit: (exit, expected) => onEvent({ type: "nginx-exited", exit, expected }) }),
    ];
    let firstError: { error: unknown } | undefined;
    for (const part of parts) {
      part.catch((error: unknown) => {
        if (firstError) return; // a consequence of the first failure
        firstError = { error };
        for (const inst of live.keys()) killInstance(inst, 2_000).catch(() => undefined);
      });
    }
    const started = await Promise.allSettled(parts);
    if (started[INSTANCE_COUNT]?.status === "fulfilled") nginx = started[INSTANCE_COUNT].value as NginxProcess;
    if (firstError) throw firstError.error;
    for (let i = 0; i < INSTANCE_COUNT; i++) instances.push((started[i] as PromiseFulfilledResult<InstanceProcess>).value);

    const restarts: Promise<void>[] = [];
    const restartInstance = (i: number): Promise<void> => {
      if (!Number.isInteger(i) || i < 0 || i >= INSTANCE_COUNT) return Promise.reject(new RangeError(`no instance ${i}`));
      if (stopping) return Promise.reject(new Error("stack is stopping"));
      const next = (restarts[i] ?? Promise.resolve())
        .catch(() => undefined)
        .then(async () => {
          if (stopping) throw new Error("stack is stopping");
          const old = instances[i]!;
          drain(old);
          await old.awaitExit(stopGraceMs);
          if (stopping) throw new Error(`stack stopped while ws${i + 1} restarted`);
          const fresh = await launch(i, redisUrl, true);
          instances[i] = fresh;
          // stop() began while it started: stop() stops it too; tell the caller.
          if (stopping) throw new Error(`stack stopped while ws${i + 1} restarted`);
        });
      restarts[i] = next;
      return next;
    };

    const stack: Stack = {
      url: `http://127.0.0.1:${basePort}`,
      nginxPort: basePort,
      nginxPid: nginx!.pid,
      nginxErrorLog: nginx!.errorLog,
      adminToken,
      redisUrl,
      redis,
      redisCluster,
      instances,
      instanceUrl(i) {
        if (!Number.isInteger(i) || i < 0 || i >= INSTANCE_COUNT) throw new RangeError(`no instance ${i}`);
        return `http://127.0.0.1:${basePort + i + 1}`;
      },
      restartInstance,
      async rollingRestart() {
        for (let i = 0; i < INSTANCE_COUNT; i++) await restartInstance(i);
      },
      stop(stopOpts = {}) {
        if (stopOpts.graceMs !== undefined) stopGraceMs = stopOpts.graceMs;
        stopping ??= stopAll(stopGraceMs);
        return stopping;
      },
    };
    return stack;
  } catch (err) {
    stopping ??= stopAll(2_000);
    await stopping.catch(() => undefined);
    throw err;
  }
}

/** GET /readyz until it answers 200 from this very instance (bounded; fails at once if it exits). */
async function waitForReady(inst: InstanceProcess, timeoutMs: number): Promise<void> {
  let exited = false;
  void inst.exited.then(() => (exited = true));
  let last = "";
  try {
    await poll(
      async () => {
        try {
          const res = await fetch(`${inst.url}/readyz`, { signal: AbortSignal.timeout(2_000) });
          const body = (await res.json().catch(() => ({}))) as { instance?: unknown };
          // Its own answer, not another process's on the same port.
          if (res.status === 200 && body.instance === inst.id) return true;
          last = `status ${res.status}, instance ${JSON.stringify(body.instance)}`;
        } catch (err) {
          last = (err as Error).message;
        }
        return false;
      },
      { timeoutMs, what: `${inst.id}'s /readyz to answer 200`, giveUp: () => (exited ? "it exited" : undefined) },
    );
  } catch (err) {
    if (exited) await inst.ended; // its last words may still be in the pipe
    throw new Error(`${exited ? `exited (${JSON.stringify(await inst.ended)})` : `${(err as Error).message} (${last})`}; last output:\n${inst.lastOutput()}`);
  }
}
