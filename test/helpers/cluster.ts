import { type InstanceProcess, startInstance } from "../../harness/instance.js";
import { freePort } from "../../harness/ports.js";
import { type RedisCluster, startRedisCluster } from "../../harness/redis-cluster.js";
import { type RedisProcess, startRedis } from "../../harness/redis.js";

export interface Cluster<R = RedisProcess> {
  redis: R;
  instances: InstanceProcess[];
  stop(): Promise<void>;
}

/** A real redis-server and `n` real instances (ws1..wsN) talking through it, clients connecting to each directly. */
export function startCluster(n: number, env: Record<string, string> = {}): Promise<Cluster> {
  return startWithRedis(startRedis(), (redis) => ({ REDIS_URL: redis.url }), n, env);
}

/** The same on a real Redis Cluster (three masters, three replicas): REDIS_CLUSTER_NODES, sharded pub/sub. */
export function startClusterOnRedisCluster(n: number, env: Record<string, string> = {}): Promise<Cluster<RedisCluster>> {
  return startWithRedis(startRedisCluster(), (redis) => ({ REDIS_CLUSTER_NODES: redis.seeds }), n, env);
}

/**
 * `n` real instances (ws1..wsN) with `env` (which says where Redis is), started
 * in parallel; stops the ones that started if one fails.
 */
export async function startInstances(n: number, env: Record<string, string>): Promise<InstanceProcess[]> {
  const ports = await Promise.all(Array.from({ length: n }, () => freePort()));
  const started = await Promise.allSettled(
    ports.map((port, i) => startInstance({ env: { PORT: String(port), INSTANCE_ID: `ws${i + 1}`, PERIODIC_INTERVAL_SEC: "0", ...env } })),
  );
  const ok = started.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
  const failed = started.find((s): s is PromiseRejectedResult => s.status === "rejected");
  if (failed) {
    await Promise.all(ok.map((i) => i.stop(1_000)));
    throw failed.reason;
  }
  return ok;
}

async function startWithRedis<R extends { stop(): Promise<unknown> }>(
  starting: Promise<R>,
  redisEnv: (redis: R) => Record<string, string>,
  n: number,
  env: Record<string, string>,
): Promise<Cluster<R>> {
  const redis = await starting;
  let instances: InstanceProcess[];
  try {
    instances = await startInstances(n, { ...redisEnv(redis), ...env });
  } catch (err) {
    await redis.stop();
    throw err;
  }
  return {
    redis,
    instances,
    stop: async () => {
      await Promise.all(instances.map((i) => i.stop(1_000)));
      await redis.stop();
    },
  };
}
