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
  return startInstancesOn(startRedis(), (redis) => ({ REDIS_URL: redis.url }), n, env);
}

/** The same on a real Redis Cluster (three masters, three replicas): REDIS_CLUSTER_NODES, sharded pub/sub. */
export function startClusterOnRedisCluster(n: number, env: Record<string, string> = {}): Promise<Cluster<RedisCluster>> {
  return startInstancesOn(startRedisCluster(), (redis) => ({ REDIS_CLUSTER_NODES: redis.seeds }), n, env);
}

async function startInstancesOn<R extends { stop(): Promise<unknown> }>(
  starting: Promise<R>,
  redisEnv: (redis: R) => Record<string, string>,
  n: number,
  env: Record<string, string>,
): Promise<Cluster<R>> {
  const redis = await starting;
  const instances: InstanceProcess[] = [];
  const stop = async () => {
    await Promise.all(instances.map((i) => i.stop(1_000)));
    await redis.stop();
  };
  try {
    const ports = await Promise.all(Array.from({ length: n }, () => freePort()));
    instances.push(
      ...(await Promise.all(
        ports.map((port, i) =>
          startInstance({ env: { PORT: String(port), INSTANCE_ID: `ws${i + 1}`, ...redisEnv(redis), PERIODIC_INTERVAL_SEC: "0", ...env } }),
        ),
      )),
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return { redis, instances, stop };
}
